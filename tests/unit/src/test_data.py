"""Tests for src.data: where Fashion-MNIST comes from, the in-memory dataset, splits, ImageNetInput.

Resolution tests use tiny IDX files written to temporary folders; the real-data tests read the
files of Debian's ``dataset-fashion-mnist`` (skipped where neither they nor ``data/`` exist).
"""

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset, random_split
from torchvision import datasets, transforms

from src import data
from src.data import (
    FASHION_MNIST_CLASSES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageNetInput,
    TensorImageDataset,
    ensure_fashion_mnist,
    fashion_mnist_tensors,
    load_fashion_mnist,
    resolve_data_root,
    rgb_transform,
    train_val_split,
)

SIZES = {"train": 5, "t10k": 3}


# ------------------------------------------------------------------ fixtures


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX format: magic (0, 0, type 0x08 = uint8, ndim), big-endian int32 dims, then the data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def tiny_fashion_mnist() -> dict[str, bytes]:
    """The four files, decompressed, with a few deterministic images each."""
    rng = np.random.default_rng(0)
    files = {}
    for prefix, n in SIZES.items():
        files[f"{prefix}-images-idx3-ubyte"] = idx_bytes(rng.integers(0, 256, (n, 28, 28)))
        files[f"{prefix}-labels-idx1-ubyte"] = idx_bytes(np.arange(n) % 10)
    return files


def write_files(folder: Path, files: dict[str, bytes], *, gz: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(content))
        else:
            (folder / name).write_bytes(content)


@pytest.fixture
def no_download(monkeypatch):
    """Make torchvision's download fail the way it does offline, and count the attempts."""
    calls = []

    def fail(self):
        calls.append(self.root)
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: <urlopen error offline>")

    monkeypatch.setattr(datasets.FashionMNIST, "download", fail)
    return calls


@pytest.fixture
def empty_system_dir(tmp_path):
    folder = tmp_path / "system"
    folder.mkdir()
    return folder


@pytest.fixture(scope="module")
def real_root():
    try:
        return ensure_fashion_mnist(download=False)
    except FileNotFoundError as err:
        pytest.skip(f"real Fashion-MNIST not available: {err}")


# ------------------------------------------------------------------ resolution


def test_default_root_is_repo_data_and_env_and_argument_override(monkeypatch, tmp_path):
    monkeypatch.delenv("KIT_DATA_DIR", raising=False)
    assert resolve_data_root() == Path(data.__file__).resolve().parent.parent / "data"
    monkeypatch.setenv("KIT_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_root() == tmp_path / "env"
    assert resolve_data_root(tmp_path / "arg") == tmp_path / "arg"


def test_files_already_in_root_are_used(tmp_path, empty_system_dir, no_download):
    files = tiny_fashion_mnist()
    write_files(tmp_path / "root" / "FashionMNIST" / "raw", files, gz=False)

    root = ensure_fashion_mnist(tmp_path / "root", system_dir=empty_system_dir)

    assert root == tmp_path / "root"
    assert no_download == []
    train = fashion_mnist_tensors("train", root=root)
    assert len(train) == SIZES["train"] and train.targets.tolist() == [0, 1, 2, 3, 4]


def test_gz_files_in_root_are_decompressed(tmp_path, empty_system_dir, no_download):
    files = tiny_fashion_mnist()
    raw = tmp_path / "FashionMNIST" / "raw"
    write_files(raw, files, gz=True)

    ensure_fashion_mnist(tmp_path, system_dir=empty_system_dir)

    assert no_download == []
    for name, content in files.items():
        assert (raw / name).read_bytes() == content


def test_debian_files_are_copied_into_torchvision_layout(tmp_path, monkeypatch, no_download):
    files = tiny_fashion_mnist()
    system = tmp_path / "usr-share-datasets-fashion-mnist"
    write_files(system, files, gz=True)
    monkeypatch.setattr(data, "SYSTEM_DATA_DIR", system)  # the module constant is the default
    monkeypatch.setenv("KIT_DATA_DIR", str(tmp_path / "root"))

    root = ensure_fashion_mnist()

    assert root == tmp_path / "root" and no_download == []
    raw = root / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(files)  # no leftover temporary files
    for name, content in files.items():
        assert (raw / name).read_bytes() == content
    # torchvision itself now reads the folder
    test = datasets.FashionMNIST(root, train=False)
    assert len(test) == SIZES["t10k"] and test.classes == list(FASHION_MNIST_CLASSES)


def test_nothing_anywhere_names_the_three_ways(tmp_path, empty_system_dir, no_download):
    with pytest.raises(FileNotFoundError) as info:
        ensure_fashion_mnist(tmp_path / "root", system_dir=empty_system_dir)

    message = str(info.value)
    assert len(no_download) == 1
    assert str(tmp_path / "root" / "FashionMNIST" / "raw") in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "download" in message and "Error downloading" in message
    assert str(empty_system_dir) in message


def test_download_false_does_not_try(tmp_path, empty_system_dir, no_download):
    with pytest.raises(FileNotFoundError, match="download=False"):
        ensure_fashion_mnist(tmp_path, system_dir=empty_system_dir, download=False)
    assert no_download == []


def test_split_name_is_checked(tmp_path):
    with pytest.raises(ValueError, match="'train' or 'test', got 'val'"):
        load_fashion_mnist("val", root=tmp_path)


# ------------------------------------------------------------------ real data


def test_real_fashion_mnist(real_root):
    train = fashion_mnist_tensors("train", root=real_root)
    test = fashion_mnist_tensors("test", root=real_root)

    assert (len(train), len(test)) == (60_000, 10_000)
    assert train.classes == list(FASHION_MNIST_CLASSES) == datasets.FashionMNIST.classes
    assert train.images.shape == (60_000, 1, 28, 28) and train.images.dtype == torch.float32
    assert train.images.min() == 0.0 and train.images.max() == 1.0
    assert train.targets.dtype == torch.int64 and train.targets.bincount().tolist() == [6000] * 10
    # the same samples as the seed's torchvision + ToTensor path
    seed_way = load_fashion_mnist("test", root=real_root, transform=transforms.ToTensor())
    for i in (0, 4321, 9999):
        image, label = test[i]
        expected_image, expected_label = seed_way[i]
        assert isinstance(label, int) and label == expected_label
        assert torch.equal(image, expected_image)


# ------------------------------------------------------------------ in-memory dataset


def make_tensor_dataset(n: int = 100, **kwargs) -> TensorImageDataset:
    g = torch.Generator().manual_seed(0)
    return TensorImageDataset(
        torch.rand(n, 1, 28, 28, generator=g), torch.arange(n) % 10, classes=FASHION_MNIST_CLASSES, **kwargs
    )


def test_tensor_dataset_items_batches_and_classes_through_subset():
    dataset = make_tensor_dataset()
    image, label = dataset[3]
    assert image.shape == (1, 28, 28) and label == 3 and isinstance(label, int)

    images, labels = next(iter(DataLoader(dataset, batch_size=32)))
    assert images.shape == (32, 1, 28, 28) and labels.dtype == torch.int64

    # the seed reads the class names through a random_split Subset
    train, _ = random_split(dataset, [0.8, 0.2])
    assert train.dataset.classes == list(FASHION_MNIST_CLASSES)
    assert dataset.class_to_idx["Ankle boot"] == 9


def test_tensor_dataset_applies_transform_per_sample():
    dataset = make_tensor_dataset(transform=ImageNetInput())
    image, _ = dataset[0]
    assert image.shape == (3, 28, 28)
    images, _ = next(iter(DataLoader(dataset, batch_size=4)))
    assert images.shape == (4, 3, 28, 28)


@pytest.mark.parametrize(
    ("images", "targets", "error", "match"),
    [
        (np.zeros((2, 1, 28, 28)), torch.zeros(2), TypeError, "got ndarray and Tensor"),
        (torch.zeros(2, 28, 28), torch.zeros(2), ValueError, r"\(N, C, H, W\), got torch.float32 \(2, 28, 28\)"),
        (torch.zeros(2, 1, 28, 28, dtype=torch.uint8), torch.zeros(2), ValueError, "float tensor"),
        (torch.zeros(2, 1, 28, 28), torch.zeros(3), ValueError, r"shape \(2,\) to match images, got \(3,\)"),
    ],
)
def test_tensor_dataset_checks_inputs(images, targets, error, match):
    with pytest.raises(error, match=match):
        TensorImageDataset(images, targets, classes=FASHION_MNIST_CLASSES)


# ------------------------------------------------------------------ splits


def test_split_sizes_and_reproducibility():
    dataset = make_tensor_dataset(100)
    train, val = train_val_split(dataset)
    assert (len(train), len(val)) == (80, 20)
    assert train.dataset is dataset and train.dataset.classes == list(FASHION_MNIST_CLASSES)
    assert sorted(train.indices + val.indices) == list(range(100))

    again_train, _ = train_val_split(dataset)
    other_train, _ = train_val_split(dataset, seed=1)
    assert train.indices == again_train.indices
    assert train.indices != other_train.indices

    state = torch.get_rng_state()
    train_val_split(dataset, val_ratio=0.5)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is untouched


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"val_ratio": 0.0}, ValueError, "strictly between 0 and 1, got 0.0"),
        ({"val_ratio": 1}, ValueError, "strictly between 0 and 1, got 1"),
        ({"val_ratio": "0.2"}, TypeError, "val_ratio must be a float, got str"),
        ({"val_ratio": True}, TypeError, "got bool"),
        ({"seed": 0.5}, TypeError, "seed must be an int, got float"),
    ],
)
def test_split_checks_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        train_val_split(TensorDataset(torch.zeros(10)), **kwargs)


def test_split_rejects_empty_or_tiny_results():
    with pytest.raises(ValueError, match="at least 2 samples to split, got 0"):
        train_val_split(TensorDataset(torch.zeros(0)))
    with pytest.raises(ValueError, match="leaves an empty part"):
        train_val_split(TensorDataset(torch.zeros(3)), val_ratio=0.01)


# ------------------------------------------------------------------ ImageNetInput


def test_imagenet_input_shapes_and_normalisation():
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    x = torch.rand(4, 1, 28, 28)

    batch = ImageNetInput()(x)
    single = ImageNetInput()(x[0])

    assert batch.shape == (4, 3, 28, 28) and single.shape == (3, 28, 28)
    assert torch.allclose(batch, (x.expand(-1, 3, -1, -1) - mean) / std)
    assert torch.equal(single, batch[0])
    assert torch.allclose(ImageNetInput()(torch.zeros(1, 2, 2)), (-mean / std).expand(3, 2, 2))


def test_imagenet_input_resize():
    x = torch.rand(2, 1, 28, 28)
    resized = ImageNetInput(resize=64)(x)
    assert resized.shape == (2, 3, 64, 64)
    assert ImageNetInput(resize=64)(x[1]).shape == (3, 64, 64)
    assert torch.allclose(ImageNetInput(resize=64)(x[1]), resized[1], atol=1e-6)
    # a constant image stays constant after bilinear resizing
    flat = ImageNetInput(resize=32)(torch.full((1, 28, 28), 0.5))
    assert torch.allclose(flat, ImageNetInput()(torch.full((1, 32, 32), 0.5)), atol=1e-6)


@pytest.mark.parametrize(
    ("x", "error", "match"),
    [
        (torch.rand(3, 28, 28), ValueError, r"\(1, H, W\) or \(N, 1, H, W\).*got shape \(3, 28, 28\)"),
        (torch.rand(8, 3, 28, 28), ValueError, r"got shape \(8, 3, 28, 28\)"),
        (torch.rand(28, 28), ValueError, r"got shape \(28, 28\)"),
        (torch.zeros(1, 28, 28, dtype=torch.uint8), ValueError, "got dtype torch.uint8"),
        (np.zeros((1, 28, 28)), TypeError, "expects a torch.Tensor, got ndarray"),
    ],
)
def test_imagenet_input_checks_inputs(x, error, match):
    with pytest.raises(error, match=match):
        ImageNetInput()(x)


@pytest.mark.parametrize("resize", [0, -3, 2.5, True])
def test_imagenet_input_checks_resize(resize):
    with pytest.raises(ValueError, match="resize must be a positive int or None"):
        ImageNetInput(resize=resize)


def test_imagenet_input_has_no_state_and_exports_with_dynamic_batch():
    module = ImageNetInput(resize=32)
    assert module.state_dict() == {}  # constants, not learned
    program = torch.export.export(
        module, (torch.rand(2, 1, 28, 28),), dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}}
    )
    x = torch.rand(5, 1, 28, 28)
    assert torch.allclose(program.module()(x), module(x))


def test_rgb_transform_matches_to_tensor_then_imagenet_input():
    pixels = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    image = Image.fromarray(pixels, mode="L")
    out = rgb_transform(resize=56)(image)
    assert out.shape == (3, 56, 56)
    assert torch.equal(out, ImageNetInput(resize=56)(transforms.ToTensor()(image)))
