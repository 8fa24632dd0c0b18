"""Model zoo: plain nn.Modules, traceable by torch.fx, with PyTorch's default initialisation (the
transformers "vit" and "gpt": Hugging Face's).

    model = build_model("resnet20", num_classes=10, in_channels=3, image_size=32)
    gpt = build_model("gpt", num_classes=vocab_size, in_channels=1, image_size=64)   # context 64
"""
from .cnn import SmallCNN
from .fcn import FCN
from .imagenet import BottleneckResNet, MobileNetV2
from .mlp import MLP
from .registry import available_models, build_model, check_model_option, model_options
from .resnet import BasicBlock, ResNet
from .transformer import GPT, Block, SelfAttention, ViT
from .unet import UNet
from .vgg import VGG
from .wide_resnet import PreActBlock, WideResNet

__all__ = ["available_models", "build_model", "check_model_option", "model_options", "MLP", "SmallCNN", "ResNet",
           "BasicBlock", "VGG", "WideResNet", "PreActBlock", "FCN", "UNet", "BottleneckResNet", "MobileNetV2",
           "ViT", "GPT", "Block", "SelfAttention"]
