import pytest
import torch

from dimalign.models import ResNet18, SmallCNN, build_model


@pytest.mark.parametrize("model, shape", [
    (SmallCNN(1, 10), (4, 1, 8, 8)),
    (SmallCNN(1, 10), (4, 1, 28, 28)),
    (SmallCNN(3, 100), (4, 3, 32, 32)),
    (ResNet18(3, 10), (2, 3, 32, 32)),
])
def test_features_and_logits_have_the_documented_shapes(model, shape):
    model.eval()
    x = torch.randn(shape)
    feats = model.features(x)
    assert feats.shape == (shape[0], model.feature_dim)
    logits = model(x)
    assert logits.shape == (shape[0], model.head.out_features)
    assert torch.allclose(model.head(feats), logits, atol=1e-5)


def test_resnet18_has_the_cifar_stem():
    model = ResNet18(3, 10)
    stem = model.body[0]
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())
    assert model.feature_dim == 512
    assert 10_000_000 < sum(p.numel() for p in model.parameters()) < 12_000_000


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ValueError, match="cnn, resnet18"):
        build_model("vgg", 3, 10)


def test_the_small_cnn_is_narrower_for_tiny_images():
    assert build_model("cnn", 1, 10, size=8).feature_dim == 64
    assert build_model("cnn", 1, 10, size=28).feature_dim == 128
