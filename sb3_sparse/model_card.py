"""The model card of a sparse agent: SB3/zoo metadata plus a sparsity section.

Used by :mod:`sb3_sparse.hub`; kept apart so the card can be built and tested without packaging.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from pprint import pformat
from typing import Any

from .card_settings import applicable_settings, method_name

# Networks a dense SB3 policy trains, by attribute name (sparse policies name theirs in the controller).
DENSE_NETWORKS = ("critic", "actor", "q_net", "quantile_net")
# Where a downloaded agent lands: rl_zoo3.load_from_hub into an empty folder makes run 1.
DOWNLOAD_FOLDER = "from_hub"
# rl-zoo3 train options whose value is a path, by what the card shows instead of a local path.
_CONF_OPTIONS = ("-conf", "--conf-file")
_FOLDER_OPTIONS = ("-f", "--log-folder")


def _shipped_name(word: str) -> str | None:
    """The shipped file's stem if ``word`` names one of the package's hyperparameter files.

    A local file counts only with the shipped content (an edited copy is the user's own).
    """
    from .paper import HYPERPARAMS_DIR

    path, shipped = Path(word), HYPERPARAMS_DIR / Path(word).name
    if not shipped.is_file() or (path.is_file() and path.read_bytes() != shipped.read_bytes()):
        return None
    return shipped.stem


def _is_local_path(word: str) -> bool:
    return word.startswith(("/", "~")) or (len(word) > 2 and word[1] == ":" and word[2] in "\\/")


def _public_word(option: str | None, word: str) -> str:
    """``word`` (the value of ``option``) as the card shows it: no path of the machine that trained."""
    name = Path(word).name
    if option in _CONF_OPTIONS and _shipped_name(word):
        return f"$(python -m sb3_sparse hyperparams {_shipped_name(word)})"  # works after pip install
    if option in _FOLDER_OPTIONS and _is_local_path(word):
        return "logs/"
    return name if _is_local_path(word) else word


def public_train_command(command: str) -> str:
    """The zoo's ``command.txt`` as the card shows it: ``python``, no local paths.

    The package's own hyperparameter files are named through the installed package
    (``$(python -m sb3_sparse hyperparams NAME)``), the log folder becomes ``logs/`` and any
    other absolute path its file name.

    :param command: the recorded command line.
    :return: the command.
    """
    words = command.split()
    if words and Path(words[0]).name.startswith("python"):
        words[0] = "python"
    public = []
    for i, word in enumerate(words):
        option, eq, value = word.partition("=")
        if eq and option.startswith("-"):  # --option=value
            public.append(f"{option}={_public_word(option, value)}")
        else:
            public.append(_public_word(words[i - 1] if i else None, word))
    return " ".join(public)


def sparsity_report(model: Any) -> dict[str, Any]:
    """Sparsity, parameter counts, FLOPs and sparse settings of a sparse (or dense baseline) SB3 model.

    :param model: a loaded SB3 algorithm.
    :return: :func:`sb3_sparse.summary` for ``model._n_updates`` updates, plus ``n_updates``,
        ``settings`` (the sparse config), ``preset``, ``sparse_policy`` (``False`` for a dense
        baseline) and ``inference_flops`` / ``dense_inference_flops`` (one action).
    """
    import sb3_sparse
    from sb3_sparse.summary import network_summary, update_periods

    n_updates = int(model._n_updates)
    policy = model.policy
    if hasattr(policy, "sparse_controller"):
        report = sb3_sparse.summary(model, n_updates=n_updates)
        report.update(settings=asdict(policy.sparse_config), preset=policy._sparse_kwargs.get("preset"), sparse_policy=True)
    else:  # dense baseline: the same accounting with every weight active
        networks = {name: network_summary(getattr(policy, name)) for name in DENSE_NETWORKS if hasattr(policy, name)}
        report = {key: sum(n[key] for n in networks.values()) for key in ("active_weights", "dense_weights")}
        periods = update_periods(model)
        per_update = sum(model.batch_size * 3 * n["dense_forward_flops"] / periods.get(k, 1) for k, n in networks.items())
        report.update(sparsity=0.0, networks=networks, method="dense", topology_updates=0, updates_since_topology_change=0)
        report.update(train_flops=per_update * n_updates, dense_train_flops=per_update * n_updates)
        report.update(settings={}, preset=None, sparse_policy=False)
    acting = report["networks"].get("actor") or next(iter(report["networks"].values()))
    report["inference_flops"] = acting["forward_flops"]
    report["dense_inference_flops"] = acting["dense_forward_flops"]
    report["n_updates"] = n_updates
    return report


def _ratio(value: float, dense: float) -> str:
    return f"{value / dense:.3f}x" if dense else "n/a"


def sparsity_section(report: dict[str, Any]) -> str:
    """The model card's sparsity section (Markdown).

    :param report: :func:`sparsity_report`.
    :return: the section, starting with its ``## Sparsity`` heading.
    """
    method = report["method"] + (f" (preset `{report['preset']}`)" if report.get("preset") else "")
    age = report["updates_since_topology_change"]
    lines = [
        "## Sparsity",
        "",
        "Trained with sb3-sparse (dynamic sparse training for Stable-Baselines3)."
        if report["sparse_policy"]
        else "A dense baseline trained with the same settings as its sparse counterparts (sb3-sparse's rl-zoo3 files).",
        "",
        "| | |",
        "|---|---|",
        f"| method | {method} |",
        f"| global sparsity (weights, biases excluded) | {report['sparsity']:.4f} |",
        f"| active / dense weights | {report['active_weights']:,} / {report['dense_weights']:,} |",
        f"| inference FLOPs per action | {report['inference_flops']:,} "
        f"({_ratio(report['inference_flops'], report['dense_inference_flops'])} dense "
        f"{report['dense_inference_flops']:,}) |",
        f"| training FLOPs ({report['n_updates']:,} gradient updates) | {report['train_flops']:.3e} "
        f"({_ratio(report['train_flops'], report['dense_train_flops'])} dense {report['dense_train_flops']:.3e}) |",
        f"| topology updates | {report['topology_updates']:,} |",
        f"| topology age | {age:,} gradient updates since the last change (or since initialisation) |",
        "",
        "FLOPs follow Evci et al. (2020) as used by Sokar et al. (2022): an update costs 3x a forward pass,",
        "2 FLOPs per active weight per sample, target forwards not counted.",
        "",
        "### Per network and layer",
        "",
        "| network | layer | sparsity | active / dense weights |",
        "|---|---|---|---|",
    ]
    for name, net in report["networks"].items():
        lines.append(f"| **{name}** | (all) | {net['sparsity']:.4f} | {net['active_weights']:,} / {net['dense_weights']:,} |")
        for layer_name, layer in net["layers"].items():
            counts = f"{layer['active_weights']:,} / {layer['dense_weights']:,}"
            lines.append(f"| {name} | `{layer_name}` | {layer['sparsity']:.4f} | {counts} |")
    if report["settings"]:
        lines += ["", "### Sparse training settings", "", "| setting | value |", "|---|---|"]
        for key, value in applicable_settings(report["settings"]).items():
            realised = f" (realised: {report['sparsity']:.4f})" if key == "sparsity" else ""
            lines.append(f"| `{key}` | `{value!r}`{realised} |")
    return "\n".join(lines) + "\n"


def _plain_usage(algo_class_name: str, algo_module: str, repo_id: str, plain_filename: str | None) -> str:
    """The card's lines for the copy that loads without sb3-sparse (none when there is no copy)."""
    if not plain_filename:
        return ""
    return f"""Without sb3-sparse: `{plain_filename}` is the same agent saved with {algo_module}'s own policy
class (absent connections stored as zeros, so the actions are identical); it needs only `{algo_module}`:

```python
from huggingface_sb3 import load_from_hub
from {algo_module} import {algo_class_name}

model = {algo_class_name}.load(load_from_hub(repo_id="{repo_id}", filename="{plain_filename}"))
```

"""


def model_card(
    *,
    algo: str,
    algo_class_name: str,
    env_id: str,
    repo_id: str,
    model_filename: str,
    mean_reward: float,
    std_reward: float,
    report: dict[str, Any],
    hyperparams: dict[str, Any],
    env_kwargs: dict[str, Any],
    install: str,
    train_command: str | None = None,
    repo_name_is_default: bool = True,
    plain_filename: str | None = None,
    algo_module: str = "stable_baselines3",
) -> Any:
    """Build the model card: the SB3/zoo metadata, the sparsity section and the usage lines.

    :param algo: the zoo's algorithm name (``"td3"``).
    :param algo_class_name: the algorithm class name (``"TD3"``).
    :param env_id: the environment id.
    :param repo_id: ``"organization/name"`` of the Hub repository.
    :param model_filename: the model zip's name in the repository.
    :param mean_reward: mean evaluation return.
    :param std_reward: its standard deviation.
    :param report: :func:`sparsity_report`.
    :param hyperparams: the run's hyperparameters (``config.yml``).
    :param env_kwargs: the environment's keyword arguments.
    :param install: the pip requirement of the plugin shown in the card.
    :param train_command: the command that trained the agent, if known.
    :param repo_name_is_default: whether the repository name is the zoo's default ``algo-env``.
    :param plain_filename: the agent saved with SB3's own policy class (``sb3_sparse.export``), if any.
    :param algo_module: the package of the algorithm class (``"stable_baselines3"`` or ``"sb3_contrib"``).
    :return: a ``huggingface_hub.ModelCard``.
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    organization = repo_id.split("/")[0]
    tags = [env_id, "deep-reinforcement-learning", "reinforcement-learning", "stable-baselines3", "sb3-sparse"]
    tags += ["sparse-training", report["method"]] if report["sparse_policy"] else ["dense-baseline"]
    if report.get("preset") and report["preset"] not in tags:
        tags.append(report["preset"])
    data = ModelCardData(
        library_name="stable-baselines3",
        tags=tags,
        model_name=algo_class_name,
        eval_results=[
            EvalResult(
                task_type="reinforcement-learning",
                task_name="reinforcement-learning",
                dataset_type=env_id,
                dataset_name=env_id,
                metric_type="mean_reward",
                metric_name="mean_reward",
                metric_value=f"{mean_reward:.2f} +/- {std_reward:.2f}",
            )
        ],
    )
    from huggingface_sb3 import EnvironmentName

    kind = f"{method_name(report, algo_class_name)}, {report['sparsity']:.2%} sparse" if report["sparse_policy"] else "dense"
    name_flag = "" if repo_name_is_default else f" -name {repo_id.split('/')[1]}"
    env_name = EnvironmentName(env_id)
    downloaded = f"{DOWNLOAD_FOLDER}/{algo}/{env_name}_1/{env_name}.zip"
    train_command = train_command or f"python -m rl_zoo3.train --algo {algo} --env {env_id} -f logs/"
    body = f"""
# **{algo_class_name}** agent ({kind}) playing **{env_id}**

This is a trained model of a **{algo_class_name}** agent playing **{env_id}** using the
[stable-baselines3 library](https://github.com/DLR-RM/stable-baselines3), the
[RL Zoo](https://github.com/DLR-RM/rl-baselines3-zoo) and the sb3-sparse plugin.
Its networks are {report["sparsity"]:.1%} sparse: {report["active_weights"]:,} of {report["dense_weights"]:,} weights.

Mean evaluation return: **{mean_reward:.2f} +/- {std_reward:.2f}**.

{sparsity_section(report)}
## Usage

Install the plugin (loading the agent needs its policy classes):

```bash
pip install "{install}" huggingface_sb3
```

Load the agent in Python:

```python
from huggingface_sb3 import load_from_hub
from stable_baselines3 import {algo_class_name}

import sb3_sparse  # noqa: F401  (the sparse policies)

checkpoint = load_from_hub(repo_id="{repo_id}", filename="{model_filename}")
model = {algo_class_name}.load(checkpoint)
print(sb3_sparse.summary(model)["sparsity"])
```

{_plain_usage(algo_class_name, algo_module, repo_id, plain_filename)}Or with the RL Zoo:

```bash
pip install "{install}" rl_zoo3
python -m rl_zoo3.load_from_hub --algo {algo} --env {env_id} -orga {organization}{name_flag} -f {DOWNLOAD_FOLDER}/
python -m rl_zoo3.enjoy --algo {algo} --env {env_id} -f {DOWNLOAD_FOLDER}/
python -m sb3_sparse info {downloaded}
```

(Downloaded into an empty `{DOWNLOAD_FOLDER}/`, the agent is run 1 there: `{downloaded}`.)

## Training (with the RL Zoo)

```bash
{train_command}
# Continue training this repository's agent (downloaded above):
{train_command.splitlines()[-1]} -i {downloaded}
python -m sb3_sparse.hub --algo {algo} --env {env_id} -f logs/ -orga {organization}
```

## Hyperparameters

```python
{pformat(dict(hyperparams))}
```
"""
    if env_kwargs:
        body += f"""
## Environment arguments

```python
{pformat(env_kwargs)}
```
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")
