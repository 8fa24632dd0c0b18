"""Offline datasets as in-memory tensors with fixed splits, optional torchvision ones, metrics.

    train, test, info = get_datasets("fashion_mnist32", subset=(2000, 500))
    info.num_classes, info.in_channels, info.image_size, info.task
    train, test, info = get_datasets("fortunes")     # character-level text: (64,) token windows
    decode(train[0][0], fortunes_vocabulary())
"""
from .augment import RandomCropFlip
from .base import DatasetInfo, InMemoryDataset, TokenDataset
from .errors import DatasetFormatError, DatasetNotFoundError
from .idx import read_idx
from .m2nist import compose_digits
from .metrics import confusion_matrix, iou_per_class, mean_iou, topk_accuracy, topk_correct
from .registry import available_datasets, get_datasets
from .splits import stratified_indices, stratified_split
from .text import decode, encode, fortunes_text, fortunes_vocabulary

__all__ = ["DatasetInfo", "InMemoryDataset", "TokenDataset", "fortunes_vocabulary", "fortunes_text", "encode",
           "decode", "RandomCropFlip", "DatasetFormatError", "DatasetNotFoundError",
           "read_idx", "compose_digits", "confusion_matrix", "iou_per_class", "mean_iou", "topk_accuracy",
           "topk_correct", "available_datasets", "get_datasets", "stratified_indices", "stratified_split"]
