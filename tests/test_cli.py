"""The command line's bad inputs and the Hub model card's content (issue #11, defect 7)."""

from __future__ import annotations

import re

import pytest
from stable_baselines3 import TD3

from sb3_sparse.__main__ import main
from sb3_sparse.model_card import method_name, model_card, public_train_command


def run_cli(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def test_info_on_a_missing_file(tmp_path, capsys):
    code, out, err = run_cli(["info", str(tmp_path / "missing.zip")], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "missing.zip: no such file" in err and ".zip.zip" not in err


def test_info_on_a_corrupt_zip(tmp_path, capsys):
    (tmp_path / "bad.zip").write_bytes(b"not a zip at all")
    code, _, err = run_cli(["info", str(tmp_path / "bad.zip")], capsys)
    assert code == 2 and err.count("\n") == 1 and "bad.zip: not a model saved by Stable-Baselines3" in err


def test_info_on_a_dense_model(tmp_path, capsys):
    TD3("MlpPolicy", "Pendulum-v1", policy_kwargs=dict(net_arch=[8])).save(tmp_path / "dense.zip")
    code, _, err = run_cli(["info", str(tmp_path / "dense.zip")], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "dense.zip: not a sparse model (policy TD3Policy); info describes models trained with 'SparseMlpPolicy'" in err


@pytest.mark.parametrize("out", ["agent.zip", "agent"])
def test_demo_names_the_file_it_saved(tmp_path, capsys, out):
    main(["demo", "--steps", "50", "--out", str(tmp_path / out)])
    text = capsys.readouterr().out
    assert (tmp_path / "agent.zip").is_file() and not (tmp_path / "agent.zip.zip").exists()
    assert f"saved to {tmp_path / 'agent.zip'} " in text and ".zip.zip" not in text


def test_the_training_command_publishes_no_local_paths(tmp_path):
    command = public_train_command(
        "/home/me/.venv/bin/python3 -m rl_zoo3.train --algo td3 --env Pendulum-v1 -conf /home/me/sb3-sparse/hyperparams/"
        "tows90_td3.yml -f /home/me/runs/logs --tensorboard-log=/home/me/tb --storage /home/me/study.log --seed 0"
    )
    assert "/home/me" not in command
    assert command == (
        "python -m rl_zoo3.train --algo td3 --env Pendulum-v1 -conf $(python -m sb3_sparse hyperparams tows90_td3) -f logs/ "
        "--tensorboard-log=tb --storage study.log --seed 0"
    )
    own_file = public_train_command("python -m rl_zoo3.train --algo td3 --env Pendulum-v1 -conf /home/me/mine.yml")
    assert own_file == "python -m rl_zoo3.train --algo td3 --env Pendulum-v1 -conf mine.yml"
    edited = tmp_path / "tows90_td3.yml"  # a local copy with other content is the user's own file
    edited.write_text("HalfCheetah-v5: {}\n")
    assert public_train_command(f"python -m rl_zoo3.train -conf {edited}").endswith("-conf tows90_td3.yml")


REPORT = dict(
    method="set",
    preset="ds-td3",
    sparse_policy=True,
    sparsity=0.5057,
    active_weights=1000,
    dense_weights=2023,
    inference_flops=10,
    dense_inference_flops=20,
    train_flops=1e6,
    dense_train_flops=2e6,
    n_updates=300,
    topology_updates=3,
    updates_since_topology_change=0,
    networks={},
    settings=dict(
        method="set", sparsity=0.5, actor_sparsity=None, critic_sparsity=None, distribution="er", lambdas=(7, 64),
        update_interval=1000, drop_fraction=0.05, drop_schedule="constant", end_fraction=1.0,
        mask_optimizer_moments=False, target_sparsity="magnitude", sparse_output_layer=False, bias=True,
        initial_sparsity=0.0, prune_start_fraction=0.2, prune_end_fraction=0.8, dormant_interval=0, dormant_threshold=0.1,
    ),
)  # fmt: skip


@pytest.mark.parametrize(
    "algo, settings, name",
    [
        ("TD3", dict(method="set", mask_optimizer_moments=False), "DS-TD3"),
        ("SAC", dict(method="set", mask_optimizer_moments=False), "DS-SAC"),
        ("SAC", dict(method="set", mask_optimizer_moments=True), "TowS-SAC"),
        ("TD3", dict(method="static", mask_optimizer_moments=False), "Static-TD3"),
        ("DQN", dict(method="rigl", mask_optimizer_moments=False), "RigL-DQN"),
        ("DQN", dict(method="set", mask_optimizer_moments=False), "SET-DQN"),
        ("QRDQN", dict(method="gmp", mask_optimizer_moments=False), "GMP-QRDQN"),
    ],
)
def test_method_names(algo, settings, name):
    assert method_name({**REPORT, "method": settings["method"], "settings": {**REPORT["settings"], **settings}}, algo) == name


def card_text(report=REPORT, env_id="Pendulum-v1", algo="td3", algo_class_name="TD3"):
    card = model_card(
        algo=algo, algo_class_name=algo_class_name, env_id=env_id, repo_id="org/name", model_filename="m.zip",
        mean_reward=-150.0, std_reward=10.0, report=report, hyperparams={}, env_kwargs={}, install="sb3-sparse",
        train_command="python -m rl_zoo3.train --algo td3 --env Pendulum-v1 -f logs/",
    )  # fmt: skip
    return str(card)


def test_the_card_names_the_paper_method_and_the_realised_sparsity():
    text = card_text()
    assert "# **TD3** agent (DS-TD3, 50.57% sparse) playing **Pendulum-v1**" in text
    assert "51%-sparse" not in text and "set)" not in text.split("\n## ")[0]
    assert "| `sparsity` |" not in text  # lambdas set the counts: the nominal sparsity does not apply
    assert "| `lambdas` | `(7, 64)` |" in text


def test_the_card_lists_only_settings_that_apply():
    settings = {**REPORT["settings"], "lambdas": None, "method": "static"}
    text = card_text({**REPORT, "method": "static", "preset": "static", "settings": settings})
    assert "| `sparsity` | `0.5` (realised: 0.5057) |" in text
    for field in ("lambdas", "actor_sparsity", "drop_fraction", "update_interval", "end_fraction", "initial_sparsity",
                  "prune_start_fraction", "dormant_threshold", "drop_schedule"):  # fmt: skip
        assert f"| `{field}` |" not in text, field
    gmp = card_text({**REPORT, "method": "gmp", "settings": {**settings, "method": "gmp", "dormant_interval": 1000}})
    for field in ("prune_start_fraction", "prune_end_fraction", "initial_sparsity", "update_interval", "dormant_threshold"):
        assert f"| `{field}` |" in gmp, field
    assert "| `drop_fraction` |" not in gmp


def test_continue_training_names_the_downloaded_run():
    text = card_text(env_id="ALE/Pong-v5", algo="dqn", algo_class_name="DQN")
    assert "python -m rl_zoo3.load_from_hub --algo dqn --env ALE/Pong-v5 -orga org -f from_hub/" in text
    assert (
        "python -m rl_zoo3.train --algo td3 --env Pendulum-v1 -f logs/ -i from_hub/dqn/ALE-Pong-v5_1/ALE-Pong-v5.zip" in text
    )
    assert "python -m sb3_sparse info from_hub/dqn/ALE-Pong-v5_1/ALE-Pong-v5.zip" in text


@pytest.mark.parametrize(
    "args, message",
    [
        (["--algo", "td3"], "no run to package: The .*nowhere/td3 folder was not found"),
        (["--algo", "td3", "--exp-id", "3"], "no run to package: The .*nowhere/td3/Pendulum-v1_3 folder was not found"),
        (["--algo", "magic"], r"--algo 'magic' is not an rl-zoo3 algorithm; allowed: \[.*'td3'"),
    ],
)
def test_hub_without_a_run_to_package(tmp_path, capsys, args, message):
    from sb3_sparse import hub

    argv = [*args, "--env", "Pendulum-v1", "-f", str(tmp_path / "nowhere"), "-orga", "me", "--local-dir", str(tmp_path)]
    assert hub.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m sb3_sparse.hub: error: ")
    assert re.search(message, err)
