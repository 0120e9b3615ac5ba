"""Tenants: enterprises, roles and their privileges, users and their passwords."""
