"""The datasets: names and sizes known without reading a file, free of torch.

`harness.train.data` reads them (format readers in `harness.train.datasets`); config validation
and a plan use the sizes here (a batch larger than the training set, images to train).
"""

DATASETS = ("cifar10", "fashion_mnist", "imagenet32", "synthetic", "npz")
# (training images, test images) of the full datasets; npz: known only once read
SIZES: dict[str, tuple[int, int]] = {
    "cifar10": (50_000, 10_000),
    "fashion_mnist": (60_000, 10_000),
    "imagenet32": (1_281_167, 50_000),
    "synthetic": (5000, 1000),               # the generated default; train_subset sets it
}
