"""IRMAE model, training loop, latent spectrum, probe, generation, interpolation, input checks."""

import json

import pytest
import torch

from factorflow.autoencoder import (
    IRMAE,
    count_above,
    epoch_line,
    fit_gaussian,
    fit_probe,
    generate,
    interpolate,
    latent_codes,
    latent_effective_rank,
    latent_spectrum,
    nearest_neighbour_mse,
    reconstruction_mse,
    sample_gaussian,
    train_autoencoder,
)
from factorflow.data.shapes import make_shapes
from factorflow.nn import DeepLinear

F64 = torch.float64


@pytest.fixture(scope="module")
def shapes():
    x, p = make_shapes(160, seed=0)
    return torch.from_numpy(x), torch.from_numpy(p["kind"])


@pytest.mark.parametrize("arch", ["mnist", "shapes"])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_of_encoder_decoder(arch, channels):
    m = IRMAE(latent_dim=16, n_linear=2, channels=channels, arch=arch, seed=0)
    x = torch.rand(5, channels, 32, 32)
    z = m.encode(x)
    assert z.shape == (5, 16)
    y = m(x)
    assert y.shape == x.shape and float(y.detach().abs().max()) < 1
    assert isinstance(m.linear, DeepLinear) and m.linear.bias is None
    assert m.latent_map().shape == (16, 16)


def test_l0_is_plain_autoencoder_and_seeded_init():
    a = IRMAE(16, 0, seed=3)
    b = IRMAE(16, 0, seed=3)
    assert a.linear is None and a.latent_map() is None
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb)
    state = torch.random.get_rng_state()
    IRMAE(16, 4, seed=1)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's RNG untouched


def test_latent_codes_fold_the_linear_layers(shapes):
    x, _ = shapes
    m = IRMAE(16, 3, channels=3, arch="shapes", seed=0).to(F64)
    z = latent_codes(m, x[:10].to(F64))
    with torch.no_grad():
        expected = m.encoder(x[:10].to(F64)) @ m.latent_map().T
    torch.testing.assert_close(z, expected)


def test_tiny_training_lowers_loss(shapes):
    x, _ = shapes
    torch.manual_seed(0)
    m = IRMAE(16, 2, channels=3, arch="shapes", seed=0)
    seen = []
    hist = train_autoencoder(
        m, x[:128], epochs=3, batch_size=16, lr=1e-3, seed=0, eval_images=x[128:],
        callback=seen.append,
    )  # fmt: skip
    recs = hist["epochs"]
    assert [r["epoch"] for r in recs] == [0, 1, 2, 3] and len(seen) == 3
    assert recs[-1]["eval_mse"] < 0.7 * recs[0]["eval_mse"]
    assert recs[-1]["train_loss"] < recs[1]["train_loss"]
    assert len(recs[-1]["spectrum"]) == 16 and recs[-1]["spectrum"][0] == pytest.approx(1.0)
    assert 1 <= recs[-1]["erank"] <= 16 and 1 <= recs[-1]["count_above_1e-2"] <= 16
    assert recs[-1]["eval_mse"] == pytest.approx(reconstruction_mse(m, x[128:]))
    assert hist["stopped"] == "epochs"


def test_training_reproducible_and_max_time(shapes):
    x, _ = shapes
    runs = []
    for _ in range(2):
        m = IRMAE(8, 1, channels=3, arch="shapes", seed=1)
        h = train_autoencoder(m, x[:32], epochs=1, batch_size=16, lr=1e-3, seed=2)
        runs.append(h["epochs"][-1]["train_loss"])
    assert runs[0] == runs[1]
    m = IRMAE(8, 0, channels=3, arch="shapes", seed=1)
    h = train_autoencoder(m, x[:64], epochs=50, batch_size=8, seed=0, max_time=0.0)
    assert h["stopped"] == "max_time" and len(h["epochs"]) == 1
    assert h["epochs"][0]["epoch"] == pytest.approx(8 / 64)


def test_spectrum_of_codes_with_known_rank():
    g = torch.Generator().manual_seed(0)
    for r in (1, 3, 7):
        A = torch.randn(r, 20, generator=g, dtype=F64)
        codes = torch.randn(500, r, generator=g, dtype=F64) @ A + 5.0  # a shift: cov removes it
        s = latent_spectrum(codes)
        assert s.shape == (20,) and s[0] == pytest.approx(1.0)
        assert count_above(s, 1e-2) == r
        assert float(s[r:].max()) < 1e-10
    iso = latent_spectrum(torch.randn(20000, 6, generator=g, dtype=F64) * 3.0)
    assert latent_effective_rank(iso) == pytest.approx(6.0, rel=0.02)
    eq = torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=F64)
    assert latent_effective_rank(eq) == pytest.approx(3.0)
    assert count_above(torch.tensor([1.0, 0.5, 0.02, 0.005]), 1e-2) == 3


def test_probe_learns_separable_classes():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(400) % 4
    centers = torch.randn(4, 10, generator=g) * 4
    codes = centers[labels] + torch.randn(400, 10, generator=g)
    for head in ("linear", "mlp"):
        probe = fit_probe(codes[:300], labels[:300], n_labels=100, head=head, steps=300)
        assert probe.accuracy(codes[300:], labels[300:]) > 0.9
        assert 0.25 <= probe.confidence(codes[300:]) <= 1.0
    chance = fit_probe(torch.randn(300, 10, generator=g), labels[:300], n_labels=100, steps=300)
    assert chance.accuracy(torch.randn(100, 10, generator=g), labels[300:]) < 0.5


def test_gaussian_sampling_degenerate_cov():
    g = torch.Generator().manual_seed(0)
    codes = torch.randn(2000, 2, generator=g, dtype=F64) @ torch.randn(2, 5, generator=g, dtype=F64)
    mean, cov = fit_gaussian(codes)
    z = sample_gaussian(mean, cov, 20000, seed=1)
    assert z.shape == (20000, 5) and torch.isfinite(z).all()
    torch.testing.assert_close(torch.cov(z.T), cov, rtol=0.05, atol=0.05 * float(cov.abs().max()))
    assert count_above(latent_spectrum(z), 1e-6) == 2
    torch.testing.assert_close(sample_gaussian(mean, cov, 3, 7), sample_gaussian(mean, cov, 3, 7))


def test_generate_and_interpolate(shapes):
    x, _ = shapes
    m = IRMAE(16, 2, channels=3, arch="shapes", seed=0)
    codes = latent_codes(m, x[:50])
    imgs = generate(m, codes, 7, seed=0)
    assert imgs.shape == (7, 3, 32, 32) and imgs.min() >= 0 and imgs.max() <= 1
    path = interpolate(m, codes[0], codes[1], steps=5)
    assert path.shape == (5, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(path[0], m.decode(codes[:1])[0].clamp(0, 1))
        torch.testing.assert_close(path[-1], m.decode(codes[1:2])[0].clamp(0, 1))


def test_nearest_neighbour_mse():
    ref = torch.rand(30, 3, 4, 4, dtype=F64)
    assert float(nearest_neighbour_mse(ref[:5], ref).abs().max()) < 1e-12
    shifted = ref[:5] + 0.1
    d = nearest_neighbour_mse(shifted, ref)
    brute = ((shifted[:, None] - ref[None]) ** 2).flatten(2).mean(2).min(1).values
    torch.testing.assert_close(d, brute)
    with pytest.raises(ValueError, match="differ"):
        nearest_neighbour_mse(torch.rand(2, 3), ref)


def test_input_errors(shapes):
    x, _ = shapes
    m = IRMAE(16, 2, channels=3, arch="shapes", seed=0)
    with pytest.raises(ValueError, match=r"latent codes must have shape \(B, 16\), got \(4, 8\)"):
        m.decode(torch.zeros(4, 8))
    with pytest.raises(ValueError, match=r"\(N, 3, 32, 32\), got \(4, 1, 32, 32\)"):
        latent_codes(m, torch.rand(4, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\(N, 3, 32, 32\), got \(4, 3, 28, 28\)"):
        train_autoencoder(m, torch.rand(4, 3, 28, 28), epochs=1)
    with pytest.raises(ValueError, match=r"\[0, 1\], got values in \[-1"):
        train_autoencoder(m, x[:4] * 2 - 1, epochs=1)
    with pytest.raises(ValueError, match="floating point"):
        latent_codes(m, (x[:4] * 255).to(torch.uint8))
    with pytest.raises(ValueError, match="epochs"):
        train_autoencoder(m, x[:4], epochs=0)
    with pytest.raises(ValueError, match=r"train_codes must have shape \(N, 16\)"):
        generate(m, torch.zeros(10, 8), 2)
    with pytest.raises(ValueError, match=r"z1 must have shape \(16,\)"):
        interpolate(m, torch.zeros(16), torch.zeros(8))
    with pytest.raises(ValueError, match="n_linear"):
        IRMAE(16, -1)
    with pytest.raises(ValueError, match="unknown arch"):
        IRMAE(16, 0, arch="celeba")
    with pytest.raises(ValueError, match="N >= 2"):
        latent_spectrum(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="n_labels"):
        fit_probe(torch.zeros(10, 4), torch.zeros(10, dtype=torch.int64), n_labels=11)


def test_training_resumes_from_its_checkpoint_to_the_same_model(shapes, tmp_path):
    """Interrupted after epoch 2 of 3 and resumed from the checkpoint: the same history and
    weights as an uninterrupted run (model, Adam and the shuffling generator are restored)."""
    x = shapes[0][:48]
    kw = {"epochs": 3, "batch_size": 16, "lr": 1e-3, "seed": 2, "eval_images": x[:16]}
    whole_model = IRMAE(8, 1, channels=3, arch="shapes", seed=1)
    whole = train_autoencoder(whole_model, x, **kw)

    def stop_at_2(record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    ck = tmp_path / "ck.pt"
    with pytest.raises(KeyboardInterrupt):
        train_autoencoder(IRMAE(8, 1, channels=3, arch="shapes", seed=1), x, checkpoint=ck,
                          callback=stop_at_2, **kw)  # fmt: skip
    assert ck.is_file()  # epoch 1 was saved, and says so beside it
    progress = json.loads((tmp_path / "ck.pt.json").read_text())
    assert (progress["done"], progress["total"], progress["unit"]) == (1, 3, "epochs")
    assert progress["elapsed_s"] > 0
    m = IRMAE(8, 1, channels=3, arch="shapes", seed=9)  # another init: the checkpoint wins
    resumed = train_autoencoder(m, x, checkpoint=ck, **kw)
    assert [r["epoch"] for r in resumed["epochs"]] == [0, 1, 2, 3]
    assert [r["train_loss"] for r in resumed["epochs"][1:]] == [
        r["train_loss"] for r in whole["epochs"][1:]
    ]
    for a, b in zip(m.state_dict().values(), whole_model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(("arch", "channels", "l"), [("mnist", 1, 0), ("shapes", 3, 2)])
def test_model_round_trips_through_an_npz_file(tmp_path, arch, channels, l):
    """A trained model written as arrays (as the experiment keeps it) and read back is the same
    function, with the same configuration; broken arrays are refused by name."""
    import numpy as np

    from factorflow.results import read_npz

    m = IRMAE(16, l, channels=channels, arch=arch, seed=0)
    with torch.no_grad():  # not the init a fresh IRMAE(seed=0) would draw
        for p in m.parameters():
            p.add_(0.01)
    np.savez_compressed(tmp_path / "m.npz", **m.to_arrays())
    back = IRMAE.from_arrays(read_npz(tmp_path / "m.npz"))
    assert (back.latent_dim, back.n_linear, back.channels, back.arch) == (16, l, channels, arch)
    x = torch.rand(4, channels, 32, 32)
    with torch.no_grad():
        assert torch.equal(back(x), m(x))
    arrays = m.to_arrays()
    with pytest.raises(ValueError, match="config.arch"):
        IRMAE.from_arrays({k: v for k, v in arrays.items() if k != "config.arch"})
    with pytest.raises(ValueError, match="do not fit"):
        IRMAE.from_arrays({k: v for k, v in arrays.items() if k != "encoder.0.weight"})


def test_epoch_line_says_the_time_and_the_spectrum_when_measured():
    rec = {"epoch": 3, "train_loss": 0.012345, "time_s": 61.6}
    assert epoch_line(rec) == "epoch 3 (62 s): loss 0.01235"
    rec.update({"erank": 3.254, "count_above_1e-2": 4, "epoch": 2.5})
    assert epoch_line(rec) == "epoch 2.5 (62 s): loss 0.01235, count 4, erank 3.25"
