"""tools/gen_proto.py replaces its own earlier output whole, and nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest
from tenantgate.testing.binaries import in_ci
from test_apikeys_gen import load_generator, tree


@pytest.fixture
def generator() -> object:
    if not in_ci():  # grpcio-tools is a dev dependency; CI installs it, so there it must exist
        pytest.importorskip("grpc_tools", reason="grpcio-tools is a dev dependency")
    return load_generator()


def test_a_directory_it_did_not_write_is_refused_and_kept(
        generator: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Before: `--out DIR` removed DIR whatever it held.
    (tmp_path / "notes.txt").write_text("precious")
    (tmp_path / "__init__.py").write_text("")
    assert generator.main(["--out", str(tmp_path)]) == 2  # type: ignore[attr-defined]
    assert capsys.readouterr().err == (
        f"gen_proto: {tmp_path} is not empty and not an output of this script: not replacing "
        "it\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["__init__.py", "notes.txt"]


def test_an_earlier_output_with_a_file_of_someone_elses_is_refused(
        generator: object, tmp_path: Path) -> None:
    out = tmp_path / "_gen"
    generator.generate(out)  # type: ignore[attr-defined]
    (out / "tenantgate" / "README.md").write_text("mine")
    assert generator.main(["--out", str(out)]) == 2  # type: ignore[attr-defined]
    assert (out / "tenantgate" / "README.md").read_text() == "mine"


def test_an_earlier_output_is_replaced_whole(generator: object, tmp_path: Path) -> None:
    out = tmp_path / "_gen"
    generator.generate(out)  # type: ignore[attr-defined]
    first = tree(out)
    (out / "tenantgate" / "removed_pb2.py").write_text("# from a .proto since deleted\n")
    generator.generate(out)  # type: ignore[attr-defined]
    assert tree(out) == first
    assert [p.name for p in tmp_path.iterdir()] == ["_gen"]  # no staging directory left


def test_a_failed_generation_leaves_the_earlier_output_as_it_was(
        generator: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "_gen"
    generator.generate(out)  # type: ignore[attr-defined]
    first = tree(out)
    broken = tmp_path / "proto"
    broken.mkdir()
    (broken / "broken.proto").write_text('syntax = "proto3";\nmessage {\n')
    monkeypatch.setattr(generator, "PROTO_ROOT", broken)
    with pytest.raises(SystemExit, match="protoc failed"):
        generator.generate(out)  # type: ignore[attr-defined]
    assert tree(out) == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["_gen", "proto"]
