"""write_or_check: the one way `amtp-obs accounting render` and `amtp-obs pricing render` keep files current."""

from __future__ import annotations

from pathlib import Path

from amtp_obs.rendered import write_or_check


def test_check_reports_a_stale_or_missing_file_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "rules" / "x.yml"
    assert write_or_check(path, "new\n", name="x.yml", command="make x", check=True) == (
        1,
        "x.yml is stale: run `make x`",
    )
    assert not path.exists()
    path.parent.mkdir()
    path.write_text("old\n")
    assert write_or_check(path, "new\n", name="x.yml", command="make x", check=True)[0] == 1
    assert path.read_text() == "old\n"


def test_write_then_up_to_date(tmp_path: Path) -> None:
    path = tmp_path / "rules" / "x.yml"
    assert write_or_check(path, "new\n", name="x.yml", command="make x", check=False) == (0, "wrote x.yml")
    assert path.read_text() == "new\n"
    assert write_or_check(path, "new\n", name="x.yml", command="make x", check=True) == (0, "x.yml is up to date")
    assert write_or_check(path, "new\n", name="x.yml", command="make x", check=False) == (0, "x.yml is up to date")
