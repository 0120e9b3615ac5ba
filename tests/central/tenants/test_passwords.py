from __future__ import annotations

from argon2 import PasswordHasher

from abiquo_central.tenants.passwords import Passwords


async def test_hash_and_verify_with_the_default_parameters_off_the_loop() -> None:
    # argon2-cffi's defaults cost tens of milliseconds: the loop guard fails this test
    # if that ran on the event loop.
    passwords = Passwords()
    hashed = await passwords.hash("s3cret")
    assert hashed.startswith("$argon2id$")
    assert await passwords.verify(hashed, "s3cret")
    assert not await passwords.verify(hashed, "S3cret")
    assert not passwords.needs_rehash(hashed)


async def test_garbage_hashes_do_not_verify(fast_passwords: Passwords) -> None:
    assert not await fast_passwords.verify("not-a-hash", "x")
    assert not await fast_passwords.verify("", "x")
    assert fast_passwords.needs_rehash("not-a-hash")
    await fast_passwords.verify_nobody("whatever")


async def test_hashes_made_with_other_parameters_need_rehashing(fast_passwords: Passwords) -> None:
    hashed = await fast_passwords.hash("pw")
    stronger = Passwords(PasswordHasher(time_cost=2, memory_cost=16, parallelism=1))
    assert await stronger.verify(hashed, "pw")
    assert stronger.needs_rehash(hashed)
