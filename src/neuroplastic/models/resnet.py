"""ResNet-18 with the CIFAR stem, written here (no torchvision needed).

He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016): four stages of two
BasicBlocks (64, 128, 256, 512 channels). The CIFAR stem, as commonly used for 32x32
images: the first convolution is 3x3 with stride 1 and there is no max-pool (the ImageNet
stem's 7x7 stride-2 convolution and max-pool would shrink a 32x32 image to 8x8 at once).
Module and parameter names are torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1``,
``layer2.0.downsample.0``, ``fc``, ...), so its state dicts map one to one; only
``conv1.weight`` (3x3 here, 7x7 in torchvision's ImageNet model) and ``fc`` (the class
count) differ in shape.
"""

from __future__ import annotations

from torch import Tensor, nn


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm and a shortcut (a 1x1 convolution + BatchNorm,
    ``downsample``, where the shape changes)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(planes))

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """A CIFAR-stem ResNet of BasicBlocks (``layers`` blocks per stage)."""

    def __init__(self, layers: tuple[int, int, int, int], *, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity()  # the CIFAR stem has none (kept so the names match)
        planes, stages = 64, []
        for index, (width, blocks) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            stride = 1 if index == 0 else 2
            rest = [BasicBlock(width, width) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(BasicBlock(planes, width, stride), *rest))
            planes = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)
        for module in self.modules():  # torchvision's initialisation
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def resnet18(num_classes: int, in_channels: int = 3) -> ResNet:
    """ResNet-18 with the CIFAR stem: 11,173,962 parameters for 3 input channels and 10
    classes."""
    return ResNet((2, 2, 2, 2), num_classes=num_classes, in_channels=in_channels)
