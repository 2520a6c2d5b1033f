"""--distribute: two multi-worker processes on localhost train in step, and bad settings are refused."""

import json
import os
import socket
import subprocess
import sys
import time
import types

import numpy as np
import pytest
import tensorflow as tf
from conftest import SCRIPT, STATE, TINY, WEIGHTS, run_script, write_book_dataset

from model import build_model
from segmentation import cli
from segmentation.distribution import is_chief

SIZE = 32
# The tiny network on 32x32 images: the later --height and --width win.
FLAGS = [*TINY, "--height", str(SIZE), "--width", str(SIZE)]


def free_ports(count):
    """Ports free at the moment of asking (the OS picks them)."""
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("localhost", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def state_arrays(path):
    """The weights (`weight_i`) and optimizer variables (`optimizer_i`) of a last-state file."""
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files if name != "state_json"}


@pytest.mark.slow
def test_two_workers_train_in_step_and_only_the_chief_writes_the_run(tmp_path):
    data_path = str(tmp_path / "drinks")
    write_book_dataset(data_path, num_train=4, num_test=2, height=SIZE, width=SIZE)
    save_dir = tmp_path / "weights"
    cluster = {"worker": [f"localhost:{port}" for port in free_ports(2)]}
    argv = ["--train", "--epochs", "1", "--distribute", "multi-worker", "--seed", "0", "--workers", "1", *FLAGS,
            "--data-path", data_path, "--save-dir", str(save_dir)]
    started = time.monotonic()
    processes = []
    for index in range(2):
        environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
                           TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        processes.append(subprocess.Popen([sys.executable, SCRIPT, *argv], cwd=tmp_path, env=environment,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        outputs = [process.communicate(timeout=300) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    print(f"two-worker training, wall time {time.monotonic() - started:.1f} s")
    for process, (out, err) in zip(processes, outputs):
        assert process.returncode == 0, out + err
    assert "Distributed training (multi-worker): 2 replicas, global batch 2 (1 per replica)" in outputs[0][0]
    assert f"Not the chief: this worker's copies of the weights, state and histories go to {save_dir / 'worker1'}" \
        in outputs[1][0]
    # The chief writes the run's files; the other worker only its own folder.
    chief_files = set(os.listdir(save_dir))
    assert {WEIGHTS, STATE, "history.csv", "miou_history.npy", "worker1"} <= chief_files
    assert {WEIGHTS, STATE, "history.csv"} <= set(os.listdir(save_dir / "worker1"))
    # Both workers hold the same weights, batch-norm statistics and optimizer state after the epoch...
    chief, worker = state_arrays(save_dir / STATE), state_arrays(save_dir / "worker1" / STATE)
    assert chief.keys() == worker.keys() and len(chief) > 100
    for name in chief:
        np.testing.assert_array_equal(chief[name], worker[name], err_msg=name)
    # ... and the chief's best weights of the epoch are those weights.
    _, fcn = build_model((SIZE, SIZE, 3), n_layers=1, n_classes=4, n=1)
    fcn.load_weights(str(save_dir / WEIGHTS))
    for index, saved in enumerate(fcn.get_weights()):
        np.testing.assert_array_equal(saved, chief[f"weight_{index}"])


def cluster_strategy(cluster, task_type, task_id):
    """A stand-in for a multi-worker strategy: only its cluster resolver is read."""
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id)
    return types.SimpleNamespace(cluster_resolver=resolver)


@pytest.mark.parametrize(
    "cluster, task_type, task_id, chief",
    [
        ({"worker": ["a:1", "b:1"]}, "worker", 0, True),
        ({"worker": ["a:1", "b:1"]}, "worker", 1, False),
        ({"chief": ["c:1"], "worker": ["a:1", "b:1"]}, "chief", 0, True),
        ({"chief": ["c:1"], "worker": ["a:1", "b:1"]}, "worker", 0, False),
    ],
)
def test_the_chief_is_the_chief_task_or_worker_0_without_one(cluster, task_type, task_id, chief):
    assert is_chief(cluster_strategy(cluster, task_type, task_id)) is chief


def test_a_single_machine_strategy_is_its_own_chief():
    assert is_chief(tf.distribute.get_strategy())


GOOD_CONFIG = json.dumps(
    {"cluster": {"worker": ["localhost:1", "localhost:2"]}, "task": {"type": "worker", "index": 0}}
)


@pytest.mark.parametrize(
    "extra, tf_config, message",
    [
        (["--train", "--seed", "0"], None, "--distribute multi-worker needs the TF_CONFIG environment variable"),
        (["--train", "--seed", "0"], "{cluster", "TF_CONFIG is not valid JSON"),
        (["--train", "--seed", "0"], '{"cluster": {"worker": ["localhost:1"]}}', "needs a 'cluster' and a 'task'"),
        (["--train", "--seed", "0"], '{"cluster": {"ps": ["h:1"]}, "task": {"type": "ps", "index": 0}}',
         "'cluster' must map 'worker'"),
        (["--train", "--seed", "0"], '{"cluster": {"worker": ["h:1"]}, "task": {"type": "worker", "index": 1}}',
         "is not in the cluster"),
        (["--train"], GOOD_CONFIG, "give every worker the same --seed S"),
        (["--evaluate"], GOOD_CONFIG, "--distribute multi-worker is used with --train"),
    ],
)
def test_bad_distribution_settings_end_with_one_line_and_status_2(book_dataset, tmp_path, capsys, monkeypatch,
                                                                   extra, tf_config, message):
    data_path, _ = book_dataset
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    status = cli.main(["--distribute", "multi-worker", *FLAGS, "--data-path", data_path,
                   "--save-dir", str(tmp_path / "w"), *extra])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and message in err and err.startswith("fcn-12.3.1.py: error: ")
    assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_a_mirrored_run_resumes_under_the_strategy(tmp_path):
    data_path = str(tmp_path / "drinks")
    write_book_dataset(data_path, num_train=4, num_test=2, height=SIZE, width=SIZE)
    save_dir = tmp_path / "weights"
    common = ["--train", "--distribute", "mirrored", "--seed", "0", "--workers", "1", *FLAGS,
              "--data-path", data_path, "--save-dir", str(save_dir)]
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    for epochs, extra in ((1, []), (2, ["--resume"])):
        result = run_script([*common, "--epochs", str(epochs), *extra], tmp_path, env=environment)
        assert result.returncode == 0, result.stdout + result.stderr
    assert "after epoch 1 of 2" in result.stdout
    with open(save_dir / "history.csv") as history:
        assert [line.split(",")[0] for line in history.read().splitlines()[1:]] == ["0", "1"]
