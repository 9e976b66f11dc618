"""Every example in the README's CLI tour, run as written (through bash, so the multi-line
`echo '{...}' | tillstamp sale record -` is exactly what a reader pastes), in a fresh folder.

Examples that need a network peer, a device or that serve forever are parsed by the real
argument parser instead of run; a placeholder in an example (a member id, a claim QR, a photo)
is replaced by a real one made in the same folder. Each run example must exit 0, except the
few listed in REFUSED, which must be refused with the line given.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT

from tillstamp.cli import build_parser

README = ROOT / "README.md"

# Not run: they need head office, a device, or they serve until stopped.
PARSE_ONLY = ("tillstamp init --hq", "tillstamp scan listen serial:", "tillstamp print test escpos+tcp",
              "tillstamp agent run", "tillstamp demo --serve", "tillstamp tap run", "tillstamp hq serve",
              "tillstamp sync ")
# Run, and refused as a user would be: (start of the example, what stderr says).
REFUSED = {"tillstamp hq terminal remove": "not enrolled here",
           # the tour's HQ has had no push from a till yet, so it knows no member to erase
           "tillstamp hq erase": "is not a member at head office",
           "tillstamp hq member show": "no such member at HQ",
           "tillstamp hq tags show": "no tags for member",
           # the channels' secrets come only from the environment, and a test sends nothing out
           "tillstamp hq flow run": "is not set"}


def examples() -> list[str]:
    """The commands of the README's tour, multi-line ones joined as the shell reads them."""
    text = README.read_text(encoding="utf-8")
    block = text.split("## A quick tour of the CLI", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    out: list[str] = []
    pending = ""
    for line in block.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending = f"{pending}\n{line}" if pending else line
        try:
            shlex.split(pending, comments=True)  # an apostrophe in a comment is not a quote
        except ValueError:
            continue  # a quote is still open: the command goes on in the next line
        out.append(pending)
        pending = ""
    assert not pending, "an example in README.md leaves a quote open"
    return out


EXAMPLES = examples()


def _tillstamp_argv(command: str) -> list[str]:
    """The arguments given to tillstamp in an example (the last stage of a pipeline)."""
    stage = command.split("|")[-1] if "| tillstamp" in command else command
    argv = shlex.split(stage, comments=True)
    assert argv[0] == "tillstamp", command
    return argv[1:]


def test_the_tour_has_the_examples() -> None:
    joined = "\n".join(EXAMPLES)
    assert "sale record -" in joined and joined.count("tillstamp") >= 35
    assert any("\n" in e and "| tillstamp sale record -" in e for e in EXAMPLES)  # the multi-line one


@pytest.mark.parametrize("command", EXAMPLES, ids=[e.split("#")[0].strip()[:60] for e in EXAMPLES])
def test_every_example_parses(command: str) -> None:
    try:
        args = build_parser().parse_args(_tillstamp_argv(command))
    except SystemExit as e:  # argparse refused it
        pytest.fail(f"README example does not parse ({e.code}): {command}")
    assert getattr(args, "func", None), command


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A folder to run the examples in, a `tillstamp` on PATH, and what the examples need."""
    root = tmp_path_factory.mktemp("readme")
    bin_dir = root / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "tillstamp"
    shim.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m tillstamp \"$@\"\n")
    shim.chmod(0o755)
    shutil.copytree(ROOT / "examples", root / "examples")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "TILLSTAMP_HOME": str(root / "till"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return root, env


def _sh(root: Path, env: dict[str, str], command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", command], cwd=root, env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def _prepare(root: Path, env: dict[str, str], command: str, found: dict[str, str]) -> str:
    """Replace an example's placeholders with real things made here."""
    if "member card 01M83FJHMZ7GZY5AG8T0QJJND6" in command:
        command = command.replace("01M83FJHMZ7GZY5AG8T0QJJND6", found["member"])
    if "'HTTPS://KLAIM.KOPISENJA.ID/TS1C...'" in command:
        guest = _sh(root, env, "echo '{\"receipt\": \"G-1\", \"lines\": [{\"sku\": \"KOPI\", \"name\": \"Kopi\", "
                               "\"qty\": 2, \"price\": 25000}], \"total\": 50000}' | tillstamp sale record - --json")
        claim = re.search(r'"claim": "([^"]+)"', guest.stdout)
        assert claim, guest.stderr
        command = command.replace("'HTTPS://KLAIM.KOPISENJA.ID/TS1C...'", shlex.quote(claim.group(1)))
    if "reward redeem kopi-gratis" in command:
        # The tour's one sale gives Budi 3 stamps; a regular's history pays for the reward.
        lines = "\n".join(
            f'{{"receipt": "H-{i}", "member": "081234567890", "lines": [{{"sku": "KOPI", "name": "Kopi", '
            f'"qty": 4, "price": 25000}}], "total": 100000}}' for i in range(3))
        (root / "history.jsonl").write_text(lines)
        assert _sh(root, env, "tillstamp sale record history.jsonl").returncode == 0
    if "decode photo.jpg" in command:
        sys.path.insert(0, str(ROOT / "tests"))
        from drivers.photos import make_photo

        (root / "photo.jpg").write_bytes(make_photo("TS1README", seed=1))
    if "print preview receipt.bin" in command:
        import datetime as dt

        from tillstamp.drivers.receipt import Slip, render_slip

        at = dt.datetime(2026, 11, 23, 9, 15, tzinfo=dt.timezone(dt.timedelta(hours=7)))
        (root / "receipt.bin").write_bytes(render_slip(Slip("Kopi Senja", "TES", at, "Halo")))
    if "tap parse job.bin" in command:
        from tap.conftest import struk

        (root / "job.bin").write_bytes(struk())
    if "hq import old-pos.csv" in command:
        (root / "old-pos.csv").write_text(
            "customer,no,time,shop,item,qty,total\n"
            "C-1,R-1,2026-11-20T09:15:00+07:00,JKT-01,KOPI-SUSU,2,50000\n"
            "C-1,R-1,2026-11-20T09:15:00+07:00,JKT-01,CROISSANT,1,22000\n"
            "C-2,R-2,2026-11-21T10:00:00+07:00,JKT-01,KOPI-SUSU,1,25000\n", encoding="utf-8")
    if "hq import transactions.parquet" in command:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"member": ["H1", "H1", "H2"], "receipt": ["B1", "B1", "B2"],
                                 "at": ["2017-03-01 15:00:00", "2017-03-01 15:00:00", "2017-03-02 16:30:00"],
                                 "store": ["S367", "S367", "S367"], "sku": ["P1", "P2", "P1"], "qty": [1, 2, 1],
                                 "amount": [1.99, 3.50, 1.99]}), root / "transactions.parquet")
        pq.write_table(pa.table({"product_id": ["P1", "P2"], "product_category": ["COFFEE", "BAKERY"]}),
                       root / "products.parquet")
    if re.search(r"hq (erase|revoke) MEMBER", command):
        command = command.replace("MEMBER", found["member"])
    return command


@pytest.mark.timeout(900)  # some fifty processes in a row: slow only on a loaded machine
def test_every_example_runs(sandbox: tuple[Path, dict[str, str]]) -> None:
    root, env = sandbox
    found: dict[str, str] = {}
    ran = 0
    for command in EXAMPLES:
        if command.startswith(PARSE_ONLY):
            continue
        done = _sh(root, env, _prepare(root, env, command, found))
        refused = next((why for start, why in REFUSED.items() if command.startswith(start)), None)
        if refused is not None:
            assert done.returncode == 2 and refused in done.stderr, (command, done.stderr)
        else:
            assert done.returncode == 0, (command, done.stdout, done.stderr)
        if command.startswith("tillstamp member enroll"):
            found["member"] = re.search(r"member: (\S+)", done.stdout).group(1)  # type: ignore[union-attr]
        if "sale record -" in command:
            assert done.stdout.startswith("R-0001: +3 stamps for "), done.stdout  # the multi-line object
        ran += 1
    assert ran >= 25
