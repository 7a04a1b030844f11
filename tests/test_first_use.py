"""What a new user runs into first: data kept elsewhere or offline, folders without a test list, labels, sidecars.

Each test here failed before its fix (issue 10).
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import shutil
import socket
import sys
import time

import pytest

from petseg import data as data_module
from petseg.checkpoints import CheckpointInfo, load_checkpoint_file, read_sidecar
from petseg.data import DataError, load_tfds_split, require_download_host
from petseg.launcher import TrainingLauncher, TrainingRequestError
from petseg.segmentation import checkpoint_markdown
from petseg.training import TrainConfig, evaluate_test_split

from conftest import ROOT, copy_checkpoint

tfds = pytest.importorskip("tensorflow_datasets")


@pytest.fixture
def tfds_loads(monkeypatch):
    """Records every ``tfds.load`` call; a call that would download raises instead, so no test ever downloads."""
    calls = []
    real_load = tfds.load

    def recording_load(*args, **kwargs):
        calls.append(kwargs)
        if kwargs.get("download"):
            raise RuntimeError("tfds would download now")
        return real_load(*args, **kwargs)

    monkeypatch.setattr(tfds, "load", recording_load)
    return calls


# -- --tfds-data-dir reaches every tfds read ------------------------------------------------------------------------


def test_final_test_evaluation_reads_tfds_from_tfds_data_dir(trained_checkpoint, tmp_path, tfds_loads):
    checkpoint_path = copy_checkpoint(trained_checkpoint.checkpoint_path, tmp_path / "weights" / "copy.keras")
    config = TrainConfig(data_dir=None, tfds_data_dir=str(tmp_path / "tfds"))
    with tfds.testing.mock_data(num_examples=1):
        sidecar, note = evaluate_test_split(checkpoint_path, config)
    assert [call["data_dir"] for call in tfds_loads] == [str(tmp_path / "tfds")]
    assert note == "" and sidecar["metrics"]["test"]["photos"] == 1


def test_evaluate_cli_takes_tfds_data_dir(trained_checkpoint, tmp_path, tfds_loads, capsys):
    from petseg.evaluate import main

    checkpoint_path = copy_checkpoint(trained_checkpoint.checkpoint_path, tmp_path / "weights" / "copy.keras")
    with tfds.testing.mock_data(num_examples=1):
        code = main(["--checkpoint", str(checkpoint_path), "--tfds-data-dir", str(tmp_path / "tfds"), "--limit", "1"])
    assert code == 0 and json.loads(capsys.readouterr().out)["photos"] == 1
    assert [call["data_dir"] for call in tfds_loads] == [str(tmp_path / "tfds")]


# -- A folder without annotations/test.txt ---------------------------------------------------------------------------


def test_a_folder_without_a_test_list_skips_the_test_evaluation_and_keeps_the_checkpoint(
        trained_checkpoint, synthetic_data, tmp_path):
    folder = shutil.copytree(synthetic_data, tmp_path / "trainval-only")
    (folder / "annotations" / "test.txt").unlink()
    checkpoint_path = copy_checkpoint(trained_checkpoint.checkpoint_path, tmp_path / "weights" / "copy.keras")
    before = read_sidecar(checkpoint_path)
    sidecar, note = evaluate_test_split(checkpoint_path, TrainConfig(data_dir=str(folder)))
    assert note.startswith("; no test evaluation: ") and "test.txt is missing" in note
    assert sidecar == before and load_checkpoint_file(checkpoint_path).model is not None


# -- tfds offline ----------------------------------------------------------------------------------------------------


def unreachable(address, timeout=None):
    raise socket.gaierror(-2, "Name or service not known")


def test_offline_tfds_says_so_before_any_download(monkeypatch, tmp_path, tfds_loads):
    monkeypatch.setattr(data_module.socket, "create_connection", unreachable)
    with pytest.raises(DataError, match="seems to be offline") as raised:
        load_tfds_split("test", str(tmp_path / "empty"))
    assert data_module.TFDS_DOWNLOAD_HOST in str(raised.value) and "--data-dir" in str(raised.value)
    assert [call["download"] for call in tfds_loads] == [False]  # It looked for prepared data, and stopped.


def test_online_tfds_still_downloads(monkeypatch, tmp_path, tfds_loads):
    connections = []
    monkeypatch.setattr(data_module.socket, "create_connection",
                        lambda address, timeout=None: connections.append(address) or socket.socket())
    with pytest.raises(DataError, match="tfds would download now"):
        load_tfds_split("test", str(tmp_path / "empty"))
    assert connections == [(data_module.TFDS_DOWNLOAD_HOST, 443)]
    assert [(call["download"], call["data_dir"]) for call in tfds_loads] == [(False, str(tmp_path / "empty")),
                                                                             (True, str(tmp_path / "empty"))]


def test_a_host_that_never_answers_is_given_up_on(monkeypatch):
    monkeypatch.setattr(data_module.socket, "create_connection", lambda address, timeout=None: time.sleep(5))
    with pytest.raises(DataError, match=r"no answer in 0\.2 s"):
        require_download_host("example.invalid", timeout=0.2)


# -- Run ids, labels and sidecars ------------------------------------------------------------------------------------


def test_a_run_id_with_a_trailing_newline_is_refused(tmp_path):
    runs_dir = tmp_path / "runs"
    (runs_dir / "run1\n").mkdir(parents=True)
    (runs_dir / "run1\n" / "status.json").write_text('{"state": "done"}')
    launcher = TrainingLauncher(tmp_path / "weights", runs_dir)
    with pytest.raises(TrainingRequestError, match=r"^Unknown run 'run1\\n'\.$"):
        launcher.run_folder("run1\n")


def test_shipped_checkpoint_label_says_which_epoch_was_kept():
    sidecar = json.loads((ROOT / "weights" / "finetune.json").read_text())
    info = CheckpointInfo("finetune", ROOT / "weights" / "finetune.keras", sidecar, available=True)
    best, done = sidecar["epochs"], sidecar["epochs_done"]
    assert best < done  # The shipped default kept an earlier epoch than its last.
    assert f"best at epoch {best} of {done}" in info.describe()
    assert f"best at epoch {best} of {done} on " in checkpoint_markdown(info)
    tutorial = json.loads((ROOT / "weights" / "tutorial.json").read_text())
    assert ", 20 epochs, " in CheckpointInfo("tutorial", ROOT / "weights" / "tutorial.keras", tutorial, True).describe()


def test_sidecars_name_their_run_without_a_machine_path(trained_checkpoint):
    assert trained_checkpoint.sidecar["run"] == trained_checkpoint.run_dir.name
    for sidecar_path in (ROOT / "weights").glob("*.json"):
        run = json.loads(sidecar_path.read_text())["run"]
        assert "/" not in run and "\\" not in run, (sidecar_path.name, run)


# -- Requirements ----------------------------------------------------------------------------------------------------

LOCAL_MODULES = {"petseg", "bench", "tests", "conftest", "app", "train"}
# Imported packages installed by a named requirement rather than named themselves.
COMES_WITH = {"keras": "tensorflow-cpu", "gradio_client": "gradio"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_modules(path) -> set[str]:
    """The top-level names ``path`` imports, anywhere in the file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_every_package_the_code_imports_is_in_a_requirements_file():
    named = set()
    for file_name in ("requirements.txt", "requirements-dev.txt"):
        for line in (ROOT / file_name).read_text().splitlines():
            requirement = line.split("#")[0].strip()
            if requirement and not requirement.startswith("-"):
                named.add(canonical(re.split(r"[<>=!~\[; ]", requirement)[0]))
    distributions = importlib.metadata.packages_distributions()
    missing = {}
    sources = [*ROOT.glob("petseg/*.py"), *ROOT.glob("bench/*.py"), *ROOT.glob("tests/*.py"), ROOT / "app.py",
               ROOT / "train.py"]
    for path in sources:
        for module in imported_modules(path) - LOCAL_MODULES - set(sys.stdlib_module_names):
            wanted = [COMES_WITH[module]] if module in COMES_WITH else distributions.get(module, [module])
            if not {canonical(name) for name in wanted} & named:
                missing.setdefault(module, path.relative_to(ROOT).as_posix())
    assert missing == {}
