import pytest
import torch

from mnist_cnn.model import CNN


@pytest.mark.parametrize("channels", [[8], [8, 16], [8, 16, 32], [4, 8, 16, 32]])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_any_one_to_four_blocks_give_logits_per_class(channels, batch_norm):
    net = CNN(channels=channels, batch_norm=batch_norm, dropout=0.2)
    logits = net(torch.randn(5, 1, 28, 28))
    assert logits.shape == (5, 10)


def test_default_is_two_conv_layers_and_one_linear_layer():
    net = CNN()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert [c.out_channels for c in convs] == [32, 64]
    assert len(linears) == 1 and linears[0].in_features == 64 * 7 * 7


def test_pooling_before_the_relu_computes_what_the_textbook_order_computes():
    torch.manual_seed(0)
    net = CNN(channels=[8, 16]).double()
    textbook = torch.nn.Sequential(  # conv, ReLU, pool: the order of every tutorial
        net.features[0], torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        net.features[4], torch.nn.ReLU(), torch.nn.MaxPool2d(2), net.classifier,
    )
    images = torch.randn(6, 1, 28, 28, dtype=torch.float64)
    logits = net(images)
    assert torch.equal(logits, textbook(images))
    ours = torch.autograd.grad(logits.square().sum(), list(net.parameters()))
    theirs = torch.autograd.grad(textbook(images).square().sum(), list(net.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))


def test_default_net_keeps_its_checkpoint_keys():
    assert list(CNN().state_dict()) == ["features.0.weight", "features.0.bias", "features.4.weight",
                                        "features.4.bias", "classifier.2.weight", "classifier.2.bias"]


@pytest.mark.parametrize("batch_norm", [False, True])
def test_two_convs_per_block_with_a_global_pool_head(batch_norm):
    net = CNN(channels=[8, 16, 32], convs_per_block=2, global_pool=True, batch_norm=batch_norm, num_classes=7)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    [linear] = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1, 8), (8, 8), (8, 16), (16, 16), (16, 32), (32, 32)]
    assert len(norms) == (6 if batch_norm else 0)
    assert linear.in_features == 32  # one value per channel of the last block
    assert net(torch.randn(3, 1, 28, 28)).shape == (3, 7)


def test_a_hidden_layer_sits_between_the_features_and_the_class_layer():
    net = CNN(channels=[8, 16], dropout=0.3, hidden_units=32, num_classes=7)
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert [(layer.in_features, layer.out_features) for layer in linears] == [(16 * 7 * 7, 32), (32, 7)]
    assert isinstance(net.classifier[3], torch.nn.Dropout)  # on the hidden units, not on the features
    assert net(torch.randn(3, 1, 28, 28)).shape == (3, 7)
