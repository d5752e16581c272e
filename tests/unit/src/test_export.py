"""Tests for src.export: round trips, dynamic batch, loading in a fresh process, refusals.

The fresh-process test is the grader's situation: a Python that imports only torch (not src,
not the class that defined the model) loads the file and predicts the same.
"""

import json
import subprocess
import sys
import zipfile

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision.models import resnet18

from src import export
from src.data import FASHION_MNIST_CLASSES, ImageNetInput
from src.engine import evaluate_loader
from src.export import InvalidSavedModelError, load_model, read_metadata, save_model


class SmallCNN(nn.Module):
    """Conv + BatchNorm + Dropout: layers whose train and eval behaviour differ."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),  # (N, 8, 14, 14)
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1),  # (N, 16, 1, 1)
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(16, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def trained_small_cnn() -> SmallCNN:
    """A SmallCNN whose BatchNorm running statistics are not the defaults."""
    torch.manual_seed(0)
    model = SmallCNN()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(16, 1, 28, 28) * 2)  # train mode: updates running mean/var
    return model


def reference(model: nn.Module, x: torch.Tensor, preprocess: nn.Module | None = None) -> torch.Tensor:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(preprocess(x) if preprocess is not None else x)
    model.train(was_training)
    return out


@pytest.fixture(scope="module")
def saved_resnet(tmp_path_factory):
    """ResNet-18 (10 classes) behind ImageNetInput, saved once for the tests that read it."""
    torch.manual_seed(1)
    model = resnet18(num_classes=10)
    preprocess = ImageNetInput(resize=32)
    path = save_model(model, tmp_path_factory.mktemp("resnet") / "resnet18.pt2", preprocess=preprocess)
    return model, preprocess, path


# ------------------------------------------------------------------ round trips


def test_small_cnn_round_trip_dynamic_batch_and_metadata(tmp_path):
    model = trained_small_cnn()
    path = save_model(model, tmp_path / "sub" / "cnn.pt2", metadata={"student": "ivanov", "epochs": 3})

    assert model.training  # the caller's mode is untouched
    loaded, metadata = load_model(path, device="cpu")
    for batch in (7, 1, 2):
        x = torch.rand(batch, 1, 28, 28)
        assert torch.allclose(loaded(x), reference(model, x), atol=1e-6)

    assert metadata["class_names"] == list(FASHION_MNIST_CLASSES)
    assert metadata["input_shape"] == ["N", 1, 28, 28] and metadata["input_range"] == [0.0, 1.0]
    assert metadata["torch_version"] == torch.__version__ and metadata["kit_version"]
    assert metadata["model_class"] == "SmallCNN"
    assert metadata["user"] == {"student": "ivanov", "epochs": 3}
    assert read_metadata(path) == metadata


def test_state_dict_keys_are_the_models_prefixed(tmp_path):
    model = trained_small_cnn()
    path = save_model(model, tmp_path / "cnn.pt2")
    program = torch.export.load(path)
    assert set(program.state_dict) == {f"model.{key}" for key in model.state_dict()}
    for key, value in model.state_dict().items():
        assert torch.equal(program.state_dict[f"model.{key}"], value)


@pytest.mark.slow
def test_resnet18_with_imagenet_input_round_trip(saved_resnet):
    model, preprocess, path = saved_resnet
    loaded, metadata = load_model(path, device="cpu")
    x = torch.rand(5, 1, 28, 28)
    assert torch.allclose(loaded(x), reference(model, x, preprocess), atol=1e-5)
    assert loaded(x[:1]).shape == (1, 10)
    assert metadata["preprocess"] == "ImageNetInput(resize=32)"
    keys = set(torch.export.load(path).state_dict)
    assert keys == {f"model.{key}" for key in model.state_dict()}  # ImageNetInput has no state


@pytest.mark.slow
def test_fresh_process_with_only_torch_predicts_the_same(saved_resnet, tmp_path):
    model, preprocess, path = saved_resnet
    x = torch.rand(6, 1, 28, 28)
    torch.save(x, tmp_path / "x.pt")
    script = (
        "import sys, torch\n"
        f"program = torch.export.load({str(path)!r})\n"
        f"x = torch.load({str(tmp_path / 'x.pt')!r})\n"
        "logits = program.module()(x)\n"
        f"torch.save(logits, {str(tmp_path / 'logits.pt')!r})\n"
        "assert not any(name == 'src' or name.startswith('src.') for name in sys.modules), 'src was imported'\n"
    )
    # cwd elsewhere, so nothing of the repository is importable by accident
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path, timeout=120)
    fresh = torch.load(tmp_path / "logits.pt")
    loaded, _ = load_model(path, device="cpu")
    with torch.no_grad():
        assert torch.equal(fresh, loaded(x))  # the same graph and weights: bit for bit
    assert torch.allclose(fresh, reference(model, x, preprocess), atol=1e-5)


def test_loaded_model_works_with_evaluate_loader(tmp_path):
    model = trained_small_cnn()
    loaded, _ = load_model(save_model(model, tmp_path / "cnn.pt2"), device="cpu")
    loaded.train()  # only a flag: the graph always computes in eval mode
    x = torch.rand(4, 1, 28, 28)
    assert torch.allclose(loaded(x), reference(model, x), atol=1e-6)

    images, labels = torch.rand(20, 1, 28, 28), torch.randint(0, 10, (20,))
    result = evaluate_loader(DataLoader(TensorDataset(images, labels), batch_size=8), loaded)
    assert torch.equal(torch.as_tensor(result["predictions"]), reference(model, images).argmax(1))
    assert loaded.training  # evaluate_loader restored the flag


def test_device_argument_moves_the_program(tmp_path, monkeypatch):
    model = nn.Sequential(nn.Conv2d(3, 1, 1), trained_small_cnn())  # 3 channels from ImageNetInput
    path = save_model(model, tmp_path / "cnn.pt2", preprocess=ImageNetInput(resize=32))
    loaded, _ = load_model(path, device="cpu")
    assert {p.device.type for p in loaded.parameters()} == {"cpu"}
    # No GPU here: the "meta" device stands in for one, through the same move_to_device_pass.
    monkeypatch.setattr(export, "pick_device", lambda device: torch.device("meta"))
    moved, _ = load_model(path, device="cuda")
    assert {t.device.type for t in [*moved.parameters(), *moved.buffers()]} == {"meta"}
    assert moved(torch.rand(3, 1, 28, 28, device="meta")).shape == (3, 10)


# ------------------------------------------------------------------ refusals on save


def test_a_torchvision_compose_is_saved_as_the_same_preprocessing(tmp_path):
    """An honest alternative to ImageNetInput: the transform the student trained with, on PIL images."""
    from torchvision import transforms
    from torchvision.transforms.functional import to_pil_image

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    compose = transforms.Compose([transforms.Grayscale(3), transforms.ToTensor(), transforms.Normalize(mean, std)])
    model = nn.Sequential(nn.Conv2d(3, 1, 1), trained_small_cnn())
    path = save_model(model, tmp_path / "m.pt2", preprocess=compose)
    loaded, _ = load_model(path, device="cpu")
    images = (torch.rand(4, 1, 28, 28) * 255).round() / 255  # exactly what ToTensor gives for 8-bit images
    by_pil = torch.stack([compose(to_pil_image(image)) for image in images])  # (4, 3, 28, 28)
    torch.testing.assert_close(loaded(images), reference(model, by_pil), rtol=1e-5, atol=1e-5)


def test_a_lambda_in_a_compose_is_applied_per_image_as_the_dataset_did(tmp_path):
    """``Lambda(lambda x: x.repeat(3, 1, 1))`` is written for one (1, H, W) image: on the batch it
    would raise; saved, it gives what the dataset gave, image by image."""
    from torchvision import transforms

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    compose = transforms.Compose([transforms.Lambda(lambda x: x.repeat(3, 1, 1)), transforms.Normalize(mean, std)])
    model = nn.Sequential(nn.Conv2d(3, 1, 1), trained_small_cnn())
    path = save_model(model, tmp_path / "m.pt2", preprocess=compose)
    loaded, _ = load_model(path, device="cpu")  # its graph passed the allow-list
    images = torch.rand(5, 1, 28, 28)
    per_image = torch.stack([compose(image) for image in images])  # (5, 3, 28, 28)
    torch.testing.assert_close(loaded(images), reference(model, per_image), rtol=1e-5, atol=1e-5)


def test_a_function_for_batches_stays_a_function_for_batches(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 1, 1), trained_small_cnn())
    loaded, _ = load_model(save_model(model, tmp_path / "m.pt2", preprocess=lambda x: x.expand(-1, 3, -1, -1)), device="cpu")
    images = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(loaded(images), reference(model, images.expand(-1, 3, -1, -1)))


def test_random_augmentations_are_left_out_of_the_saved_preprocessing(tmp_path):
    from torchvision import transforms

    compose = transforms.Compose([transforms.RandomHorizontalFlip(), transforms.ToTensor()])
    model = trained_small_cnn()
    loaded, _ = load_model(save_model(model, tmp_path / "m.pt2", preprocess=compose), device="cpu")
    images = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(loaded(images), reference(model, images))


def test_save_checks_the_number_of_classes(tmp_path):
    with pytest.raises(ValueError, match=r"logits \(N, 10\) for 10 classes, got \(2, 1000\)"):
        save_model(resnet18(), tmp_path / "m.pt2", preprocess=ImageNetInput())


def test_save_checks_metadata_and_shape(tmp_path):
    with pytest.raises(TypeError, match="metadata must be JSON-serialisable"):
        save_model(SmallCNN(), tmp_path / "m.pt2", metadata={"tensor": torch.ones(1)})
    with pytest.raises(ValueError, match=r"input_shape must be \(C, H, W\) with positive ints, got \(28, 28\)"):
        save_model(SmallCNN(), tmp_path / "m.pt2", input_shape=(28, 28))
    with pytest.raises(ValueError, match="path must end with .pt2"):
        save_model(SmallCNN(), tmp_path / "model.pth")


def test_save_leaves_the_global_rng_alone(tmp_path):
    model = SmallCNN()
    state = torch.get_rng_state()
    save_model(model, tmp_path / "m.pt2")
    assert torch.equal(state, torch.get_rng_state())


def test_untraceable_model_is_a_clear_error(tmp_path):
    class Branchy(SmallCNN):
        def forward(self, x):
            out = super().forward(x)
            return out if out.sum() > 0 else -out  # depends on the values: cannot be one graph

    with pytest.raises(RuntimeError, match="torch.export could not trace the model"):
        save_model(Branchy(), tmp_path / "m.pt2")


# ------------------------------------------------------------------ refusals on load


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no saved model at"):
        load_model(tmp_path / "nope.pt2", device="cpu")


@pytest.mark.parametrize("kind", ["text", "state_dict", "plain_export"])
def test_files_that_are_not_saved_models(tmp_path, kind):
    path = tmp_path / "bogus.pt2"
    if kind == "text":
        path.write_text("not a model")
    elif kind == "state_dict":
        torch.save(SmallCNN().state_dict(), path)
    else:  # a torch.export archive without the kit's metadata
        program = torch.export.export(SmallCNN().eval(), (torch.rand(2, 1, 28, 28),))
        torch.export.save(program, path)

    with pytest.raises(InvalidSavedModelError, match=r"is not a model saved by src.export.save_model.*Re-save it"):
        load_model(path, device="cpu")


def test_a_graph_that_creates_a_file_is_refused_before_it_runs(tmp_path):
    """A saved graph is JSON anyone can edit: one added ``aten.from_file`` node would create a file
    with the rights of whoever evaluates the model. The allow-list refuses it by name."""
    from grader_notebooks import add_file_operator

    path = save_model(trained_small_cnn(), tmp_path / "evil.pt2")
    marker = tmp_path / "created-by-the-graph"
    exec(add_file_operator(str(path), str(marker)), {})
    torch.export.load(path).module()(torch.rand(2, 1, 28, 28))  # unchecked, the node does run
    assert marker.exists()
    marker.unlink()
    with pytest.raises(export.UnsafeGraphError, match="aten::from_file"):
        load_model(path, device="cpu")
    assert not marker.exists()


def test_the_allow_list_accepts_the_models_of_the_course(tmp_path):
    from torchvision import transforms

    grey_to_rgb = transforms.Compose([transforms.Grayscale(3), transforms.ToTensor(), transforms.Resize(40)])
    models = {
        "cnn": (trained_small_cnn(), None),
        "resnet": (resnet18(num_classes=10), ImageNetInput(resize=32)),
        "compose": (resnet18(num_classes=10), grey_to_rgb),
    }
    for name, (model, preprocess) in models.items():
        path = save_model(model, tmp_path / f"{name}.pt2", preprocess=preprocess)
        export.check_graph(torch.export.load(path))  # raises if a node is outside the list


def test_pickled_payload_is_refused_before_torch_loads_anything(tmp_path, monkeypatch):
    path = save_model(trained_small_cnn(), tmp_path / "ok.pt2")
    tampered = tmp_path / "tampered.pt2"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(tampered, "w") as target:
        for item in source.infolist():
            content = source.read(item)
            if item.filename.endswith("data/weights/model_weights_config.json"):
                config = json.loads(content)
                next(iter(config["config"].values()))["use_pickle"] = True  # would make torch unpickle
                content = json.dumps(config).encode()
            target.writestr(item, content)
    monkeypatch.setattr(torch.export, "load", lambda *a, **k: pytest.fail("torch.export.load was reached"))

    with pytest.raises(InvalidSavedModelError, match="stored as pickled objects"):
        load_model(tampered, device="cpu")
