"""Masks are saved as bits (``weight_mask_bits``), restored bit-identical, and float-mask
checkpoints written before still load."""

import io
import zipfile

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stable_baselines3 import SAC, TD3

from sb3_sparse import SparseTrainingCallback
from sb3_sparse.core.layers import MaskedConv2d, MaskedLayerMixin, MaskedLinear, sparse_layers
from sb3_sparse.core.mask_bits import BITS_KEY, MASK_KEY, pack_mask, packed_size, unpack_mask

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def random_mask(shape, density, seed, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=generator) < density).to(dtype)


def masked_layer(out_features=13, in_features=7, seed=0):
    torch.manual_seed(seed)
    layer = MaskedLinear(in_features, out_features)
    layer.set_mask_(random_mask((out_features, in_features), 0.3, seed))
    return layer


@pytest.fixture
def old_format(monkeypatch):
    """Make masked layers write their float ``weight_mask`` as before the bits format."""
    monkeypatch.delattr(MaskedLayerMixin, "_save_to_state_dict")


def masks(model):
    return {name: layer.weight_mask.clone() for name, layer in sparse_layers(model.policy)}  # online and target


def assert_same_masks(a, b):
    assert a.keys() == b.keys() and a
    for name in a:
        assert a[name].dtype == b[name].dtype and torch.equal(a[name], b[name]), name


def make(algo=TD3, seed=0, **policy_kwargs):
    kwargs = {"net_arch": [37, 19], "preset": "tows", "sparsity": 0.8, "update_interval": 10} | policy_kwargs
    return algo("SparseMlpPolicy", "Pendulum-v1", learning_starts=32, batch_size=16, seed=seed, policy_kwargs=kwargs)


def trained(algo=TD3, seed=0):
    """A model whose masks evolved away from the ones its seed builds (so a load that dropped them would show)."""
    model = make(algo, seed)
    initial = masks(model)
    model.learn(100, callback=SparseTrainingCallback())
    assert not all(torch.equal(initial[name], mask) for name, mask in masks(model).items())
    return model


def zip_state(path):
    """The policy state dict inside an SB3 zip, as ``torch.load`` reads it."""
    with zipfile.ZipFile(path) as archive:
        return torch.load(io.BytesIO(archive.read("policy.pth")), weights_only=True)


# -- the packing ------------------------------------------------------------------------------


@FAST
@given(
    shape=st.lists(st.integers(1, 11), min_size=1, max_size=4),
    density=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.float16]),
)
def test_bits_round_trip_any_shape(shape, density, seed, dtype):
    mask = random_mask(shape, density, seed, dtype)
    bits = pack_mask(mask)
    assert bits.dtype == torch.uint8 and bits.shape == (packed_size(mask.numel()),)
    # NumPy's layout, so the bits can be read without torch.
    assert np.array_equal(bits.numpy(), np.packbits(mask.numpy().reshape(-1) != 0))
    restored = unpack_mask(bits, mask.shape, dtype)
    assert restored.dtype == dtype and torch.equal(restored, mask)


def test_unpack_refuses_bits_of_the_wrong_size_or_type():
    bits = pack_mask(torch.ones(3, 5))  # 15 entries: 2 bytes
    with pytest.raises(ValueError, match=r"2 bytes for a weight of shape \(3, 5\).*shape=\(1,\)"):
        unpack_mask(bits[:1], torch.Size((3, 5)), torch.float32)
    with pytest.raises(ValueError, match=r"dtype=torch\.int16"):
        unpack_mask(bits.to(torch.int16), torch.Size((3, 5)), torch.float32)


# -- one layer --------------------------------------------------------------------------------


@pytest.mark.parametrize("make_layer", [masked_layer, lambda: MaskedConv2d(3, 5, 3, bias=False)])
def test_a_layer_state_dict_holds_bits_and_loads_back(make_layer):
    layer = make_layer()
    layer.set_mask_(random_mask(layer.weight.shape, 0.4, 1))
    state = layer.state_dict()
    assert MASK_KEY not in state and state[BITS_KEY].dtype == torch.uint8
    assert state[BITS_KEY].numel() == packed_size(layer.weight.numel())
    assert layer.weight_mask.dtype == torch.float32  # in memory the mask stays a float tensor

    fresh = make_layer()
    fresh.load_state_dict(state)
    assert torch.equal(fresh.weight_mask, layer.weight_mask) and torch.equal(fresh.weight, layer.weight)
    assert MASK_KEY in fresh._buffers and fresh.weight_mask.dtype == torch.float32


def test_a_float_mask_state_dict_loads(old_format):
    layer = masked_layer(seed=3)
    state = layer.state_dict()
    assert state[MASK_KEY].dtype == torch.float32 and BITS_KEY not in state  # the old format
    fresh = masked_layer(seed=4)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.weight_mask, layer.weight_mask)


def test_bad_bits_fail_naming_the_key():
    state = masked_layer().state_dict()
    message = r"loading 'weight_mask_bits': .*12 bytes for a weight of shape \(13, 7\).*shape=\(11,\)"
    with pytest.raises(RuntimeError, match=message):
        masked_layer().load_state_dict(state | {BITS_KEY: state[BITS_KEY][:-1]})
    with pytest.raises(RuntimeError, match="both 'weight_mask' and 'weight_mask_bits'"):
        masked_layer().load_state_dict(state | {MASK_KEY: torch.ones(13, 7)})


# -- whole agents -----------------------------------------------------------------------------


@pytest.mark.parametrize("algo", [TD3, SAC])
def test_model_save_load_restores_masks_from_bits(tmp_path, algo):
    model = trained(algo)
    model.save(tmp_path / "m")
    state = zip_state(tmp_path / "m.zip")
    assert not any(key.endswith(MASK_KEY) for key in state)
    assert sum(key.endswith(BITS_KEY) for key in state) == len(sparse_layers(model.policy))

    loaded = algo.load(tmp_path / "m.zip", device="cpu")
    assert_same_masks(masks(model), masks(loaded))
    for key, value in model.policy.state_dict().items():
        assert torch.equal(value, loaded.policy.state_dict()[key]), key


def test_masks_take_a_32nd_of_the_weights_bytes(tmp_path):
    sparse, dense = make(net_arch=[256, 256]), TD3("MlpPolicy", "Pendulum-v1", policy_kwargs={"net_arch": [256, 256]})
    sparse.save(tmp_path / "sparse")
    dense.save(tmp_path / "dense")
    weights = sum(layer.weight.numel() for _, layer in sparse_layers(sparse.policy))
    extra = (tmp_path / "sparse.zip").stat().st_size - (tmp_path / "dense.zip").stat().st_size
    assert weights / 8 <= extra < weights / 8 + 20_000  # the bits plus the controller's state


def test_a_float_mask_checkpoint_loads(tmp_path, old_format, monkeypatch):
    model = trained(seed=1)
    model.save(tmp_path / "old")
    old_masks = [value for key, value in zip_state(tmp_path / "old.zip").items() if key.endswith(MASK_KEY)]
    assert len(old_masks) == len(sparse_layers(model.policy)) and all(m.dtype == torch.float32 for m in old_masks)
    monkeypatch.undo()  # back to the bits format for loading
    loaded = TD3.load(tmp_path / "old.zip", device="cpu")
    assert_same_masks(masks(model), masks(loaded))
    loaded.save(tmp_path / "new")  # and saved again, in bits
    assert not any(key.endswith(MASK_KEY) for key in zip_state(tmp_path / "new.zip"))


def test_policy_state_dict_round_trip_into_another_seed():
    source, other = make(seed=5), make(seed=6)
    assert not all(torch.equal(a, b) for a, b in zip(masks(source).values(), masks(other).values(), strict=True))
    other.policy.load_state_dict(source.policy.state_dict())
    assert_same_masks(masks(source), masks(other))


@pytest.mark.parametrize("bits", [True, False])
def test_a_network_saved_alone_loads_back_in_either_format(tmp_path, monkeypatch, bits):
    model = trained(seed=7)
    if not bits:
        monkeypatch.delattr(MaskedLayerMixin, "_save_to_state_dict")
    model.actor.save(tmp_path / "actor.pt")
    monkeypatch.undo()
    saved = torch.load(tmp_path / "actor.pt", weights_only=False)["state_dict"]
    assert any(key.endswith(BITS_KEY if bits else MASK_KEY) for key in saved)
    assert not any(key.endswith(MASK_KEY if bits else BITS_KEY) for key in saved)
    loaded = type(model.actor).load(tmp_path / "actor.pt", device="cpu")
    expected = {name: layer.weight_mask for name, layer in sparse_layers(model.actor)}
    assert_same_masks(expected, {name: layer.weight_mask for name, layer in sparse_layers(loaded)})
