"""The audit log's hash chain and `ssan audit verify`: alteration, removal, insertion, rotation."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

from ssan.cli import main
from ssan.search.audit import AuditLog
from ssan.search.audit_chain import GENESIS, line_hash, verify


def write_log(path: Path, count: int, **kwargs) -> AuditLog:
    log = AuditLog(path, **kwargs)
    for number in range(count):
        log.write({"time": f"t{number}", "user": "alice", "query": f"query {number} " + "x" * 80, "k": 3})
    return log


def rewrite(path: Path, change) -> None:
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(change(lines)), encoding="utf-8")


def cli(capsys, log: Path):
    status = main(["audit", "verify", str(log)])
    return status, capsys.readouterr().out


def test_an_intact_chain_verifies_and_each_line_links_to_the_one_before(tmp_path, capsys):
    path = tmp_path / "audit.jsonl"
    write_log(path, 5)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert records[0]["prev"] == GENESIS
    for before, record in zip([None] + records, records):
        content = {k: v for k, v in record.items() if k not in ("prev", "hash")}
        assert record["hash"] == line_hash(record["prev"], content)
        assert before is None or record["prev"] == before["hash"]
    status, out = cli(capsys, path)
    assert status == 0 and out.startswith("intact: 5 lines") and records[-1]["hash"] in out


def test_an_altered_line_is_named(tmp_path, capsys):
    path = tmp_path / "audit.jsonl"
    write_log(path, 5)
    rewrite(path, lambda lines: lines[:2] + [lines[2].replace("query 2", "query 9")] + lines[3:])
    status, out = cli(capsys, path)
    assert status == 1 and f"{path}:3: altered" in out


def test_an_altered_last_line_is_named(tmp_path, capsys):
    path = tmp_path / "audit.jsonl"
    write_log(path, 4)
    rewrite(path, lambda lines: lines[:3] + [lines[3].replace('"alice"', '"mallory"')])
    status, out = cli(capsys, path)
    assert status == 1 and f"{path}:4: altered" in out


def test_a_removed_line_is_named_by_the_line_after_it(tmp_path, capsys):
    path = tmp_path / "audit.jsonl"
    write_log(path, 5)
    rewrite(path, lambda lines: lines[:2] + lines[3:])
    status, out = cli(capsys, path)
    assert status == 1 and f"{path}:3: its prev does not match" in out and "removed" in out


def test_an_inserted_line_is_named_whether_or_not_its_hash_is_forged(tmp_path, capsys):
    path = tmp_path / "audit.jsonl"
    write_log(path, 4)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    content = {"time": "t1b", "user": "mallory", "query": "planted", "k": 1}
    forged = {**content, "prev": records[1]["hash"], "hash": line_hash(records[1]["hash"], content)}
    clumsy = {**content, "prev": records[1]["hash"], "hash": "f" * 64}
    for inserted in (forged, clumsy):
        original = path.read_text()
        rewrite(path, lambda lines, planted=inserted: lines[:2] + [json.dumps(planted) + "\n"] + lines[2:])
        status, out = cli(capsys, path)
        assert status == 1 and f"{path}:3: inserted" in out
        path.write_text(original)
    assert cli(capsys, path)[0] == 0


def test_the_chain_runs_across_rotations_and_a_change_in_an_old_file_is_found(tmp_path, capsys):
    path = tmp_path / "audit.jsonl"
    write_log(path, 400, max_bytes=16 * 1024, backups=3)
    files = sorted(p.name for p in tmp_path.glob("audit.jsonl*"))
    assert files == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2", "audit.jsonl.3"]
    first_of_new = json.loads(path.read_text().splitlines()[0])
    last_of_old = json.loads((tmp_path / "audit.jsonl.1").read_text().splitlines()[-1])
    assert first_of_new["prev"] == last_of_old["hash"]
    status, out = cli(capsys, path)
    assert status == 0 and "audit.jsonl.3" in out
    old = tmp_path / "audit.jsonl.2"
    rewrite(old, lambda lines: lines[:-1])  # the last line of a rotated file removed
    status, out = cli(capsys, path)
    assert status == 1 and f"{tmp_path / 'audit.jsonl.1'}:1: its prev does not match" in out


def test_lines_from_before_the_chain_are_accepted_at_the_start(tmp_path):
    path = tmp_path / "audit.jsonl"
    path.write_text(json.dumps({"time": "old", "query": "before the chain"}) + "\n")
    write_log(path, 3)
    assert verify(path).ok


def _writer(path: str, number: int) -> None:
    write_log(Path(path), 0)
    log = AuditLog(path, max_bytes=16 * 1024)
    for line in range(60):
        log.write({"writer": number, "line": line, "pad": "y" * 200})


def test_two_processes_appending_keep_one_chain(tmp_path):
    """`ssan forget` appends erasures to the log a running `ssan serve` writes: one chain, one rotation order."""
    path = tmp_path / "audit.jsonl"
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_writer, args=(str(path), n)) for n in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    verdict = verify(path)
    assert verdict.ok, verdict.problem
    assert verdict.lines == 120 and len(list(tmp_path.glob("audit.jsonl.*"))) == 2
