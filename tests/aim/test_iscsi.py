"""The iSCSI group through a real thrift client, with the real iscsiadm and fakes of it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from aim.iscsi import IscsiGroup, parse_initiator_name, valid_name
from aim.settings import AimSettings, IscsiSettings
from tests import services
from tests.aim.conftest import serving

IQN = "iqn.1993-08.org.debian:01:97f91ffc8e11"


def settings(tmp_path: Path, *, iscsiadm: str = "iscsiadm", initiator: str | None = None) -> Any:
    name_file = tmp_path / "initiatorname.iscsi"
    if initiator is not None:
        name_file.write_text(initiator)
    return AimSettings(iscsi=IscsiSettings(initiator_name_file=str(name_file), iscsiadm=iscsiadm))


def script(tmp_path: Path, body: str, name: str = "fake-iscsiadm") -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


async def code_of(call: Any) -> tuple[str, str]:
    try:
        await call
    except Exception as exc:
        return str(exc.code), str(exc.message)  # type: ignore[attr-defined]
    raise AssertionError("no exception")


@pytest.mark.parametrize(
    "name",
    [
        IQN,
        "iqn.2001-04.com.example",
        "iqn.2001-04.com.example:storage.disk2.sys1.xyz",
        "iqn.2010-12.com.abiquo:volume-0b0c/1",
        "eui.02004567A425678D",
    ],
)
def test_valid_names(name: str) -> None:
    assert valid_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "iqn",
        "iqn.2001-13.com.example",
        "iqn.01-04.com.example",
        "iqn.2001-04.-bad.example",
        "iqn.2001-04.com.example:has space",
        "iqn.2001-04.com.example:x\nInjected",
        "--rescan",
        "-m",
        "eui.0200",
        "eui.02004567A425678G",
        "naa.52004567ba64678d",
        "iqn.2001-04.com.example:" + "x" * 300,
    ],
)
def test_invalid_names(name: str) -> None:
    assert not valid_name(name)


def test_parse_initiator_name() -> None:
    assert parse_initiator_name(f"## comment InitiatorName=x\n InitiatorName = {IQN}\n") == IQN
    assert parse_initiator_name("InitiatorName=nonsense\n") is None
    assert parse_initiator_name("# nothing\n") is None


async def test_initiator_iqn(contract: ModuleType, tmp_path: Path) -> None:
    good = settings(tmp_path, initiator=f"## DO NOT EDIT\nInitiatorName={IQN}\n")
    async with serving(contract, [IscsiGroup(contract=contract, settings=good)]) as client:
        assert await client.getInitiatorIQN() == IQN
        name_file = Path(good.iscsi.initiator_name_file)
        await asyncio.to_thread(name_file.write_text, "InitiatorName=\n")
        assert (await code_of(client.getInitiatorIQN()))[0] == "ISCSI-IQN"
        await asyncio.to_thread(name_file.unlink)
        assert (await code_of(client.getInitiatorIQN()))[0] == "ISCSI-IQN"


async def test_rescan_with_the_real_iscsiadm_and_no_sessions(
    contract: ModuleType, tmp_path: Path
) -> None:
    services.require_tool("iscsiadm", "open-iscsi")
    # Here no session is logged in: iscsiadm says "No session found." and exits 21,
    # which means nothing to rescan, a success.
    group = IscsiGroup(contract=contract, settings=settings(tmp_path))
    async with serving(contract, [group]) as client:
        await client.rescanISCSI([])
        await client.rescanISCSI(["iqn.2010-12.com.abiquo:nothing-here"])


async def test_invalid_target_never_reaches_iscsiadm(contract: ModuleType, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    fake = script(tmp_path, f"touch {marker}\n")
    group = IscsiGroup(contract=contract, settings=settings(tmp_path, iscsiadm=fake))
    async with serving(contract, [group]) as client:
        code, _ = await code_of(client.rescanISCSI([IQN, "-o delete"]))
        assert code == "ISCSI-INVALID"
    assert not marker.exists()


async def test_arguments_passed_as_they_are(contract: ModuleType, tmp_path: Path) -> None:
    log = tmp_path / "args"
    fake = script(tmp_path, f'for a in "$@"; do echo "$a" >> {log}; done\n')
    group = IscsiGroup(contract=contract, settings=settings(tmp_path, iscsiadm=fake))
    async with serving(contract, [group]) as client:
        await client.rescanISCSI(["iqn.2010-12.com.abiquo:a", "eui.02004567A425678D"])
        await client.rescanISCSI([])
    assert log.read_text().split("\n")[:-1] == [
        *("-m", "node", "-T", "iqn.2010-12.com.abiquo:a", "-R"),
        *("-m", "node", "-T", "eui.02004567A425678D", "-R"),
        *("-m", "session", "--rescan"),
    ]


async def test_failures(contract: ModuleType, tmp_path: Path) -> None:
    failing = script(tmp_path, 'echo "iscsiadm: rescan exploded" >&2\nexit 7\n')
    group = IscsiGroup(contract=contract, settings=settings(tmp_path, iscsiadm=failing))
    slow = IscsiGroup(
        contract=contract,
        settings=settings(tmp_path, iscsiadm=script(tmp_path, "exec sleep 10\n", "slow-iscsiadm")),
        timeout=0.2,
    )
    missing = IscsiGroup(
        contract=contract, settings=settings(tmp_path, iscsiadm=str(tmp_path / "absent"))
    )
    for g, expected in [(group, "rescan exploded"), (slow, "took over"), (missing, "cannot run")]:
        async with serving(contract, [g]) as client:
            code, message = await code_of(client.rescanISCSI([]))
            assert code == "ISCSI-RESCAN"
            assert expected in message
            # Still serving after a failure.
            code, _ = await code_of(client.rescanISCSI(["bad"]))
            assert code == "ISCSI-INVALID"
