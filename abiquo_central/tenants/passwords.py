"""Password hashing with argon2, kept off the event loop.

Hashing and verifying cost tens of milliseconds of CPU by design: they run in an
executor (the loop's default one unless another is given). The hasher is passed in, so
tests can use cheap parameters while production keeps argon2-cffi's defaults.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError


class Passwords:
    def __init__(
        self, hasher: PasswordHasher | None = None, *, executor: Executor | None = None
    ) -> None:
        self._hasher = hasher if hasher is not None else PasswordHasher()
        self._executor = executor
        # Verified against when the user does not exist, so that an unknown nick takes
        # as long to refuse as a wrong password (no user enumeration by timing).
        self._decoy: str | None = None

    def hash_now(self, password: str) -> str:
        """Hash synchronously: for threads and scripts, never on the event loop."""
        return self._hasher.hash(password)

    def verify_now(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        """True when the hash was made with other parameters than the current ones."""
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True

    async def hash(self, password: str) -> str:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.hash_now, password)

    async def verify(self, password_hash: str, password: str) -> bool:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.verify_now, password_hash, password)

    async def verify_nobody(self, password: str) -> None:
        """Spend the time a verification takes, for a user that does not exist."""
        if self._decoy is None:
            self._decoy = await self.hash("decoy password: nobody has it")
        await self.verify(self._decoy, password)
