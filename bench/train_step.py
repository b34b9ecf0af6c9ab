"""Images/s of a full MetricModel training step on this CPU.

The step is the Proxy Anchor recipe: backbone -> GAP+GMP -> Dense(512) -> L2,
Proxies(100), ProxyAnchorLoss, AdamW with proxies at 100x lr, gradient-value
clipping at 10. Measured for

  backbones  resnet50 (keras.applications.ResNet50, weights=None) and a small
             4-block CNN, both at --image-size (224 by default)
  devices    1 (default strategy) and 2 (MirroredStrategy over two logical
             CPU devices: the global-batch all_gather and the one gradient
             all-reduce of MetricModel are in the step)
  pipelines  cached: preprocessed float images held in memory
             live:   JPEG bytes -> decode -> RandomResizedCrop + flip
                     (the authors' training augmentation) in a tf.data map

so that steps bound by the input pipeline show (compare with the "pipeline
alone" column: the rate at which the live pipeline produces images with no
model). Time is measured after --warmup-steps steps (tracing excluded), from
batch-end callbacks.

    python bench/train_step.py --quick    # tiny: 64 px, batch 8, 3 steps
    python bench/train_step.py            # 224 px, batch 32 (slow on CPU)
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

# Two logical CPU devices, before TensorFlow initialises.
_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

import keras_dml as kd  # noqa: E402

NUM_CLASSES = 100
SOURCE_SIZE = 256          # stored JPEGs are 256 x 256, like resized datasets


def small_backbone(size):
    inputs = keras.Input((size, size, 3))
    x = inputs
    for filters in (32, 64, 128, 256):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same",
                                use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
    return keras.Model(inputs, x, name="small_cnn")


def resnet50(size):
    return keras.applications.ResNet50(weights=None, include_top=False,
                                       input_shape=(size, size, 3))


BACKBONES = {"resnet50": resnet50, "small": small_backbone}


def jpeg_images(n, seed=0):
    """n smooth random colour images, JPEG-encoded once."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        low = rng.uniform(0, 255, size=(8, 8, 3)).astype("float32")
        img = tf.image.resize(low[None], (SOURCE_SIZE, SOURCE_SIZE))[0]
        img = img + rng.normal(0, 8, size=img.shape).astype("float32")
        img = tf.cast(tf.clip_by_value(img, 0, 255), tf.uint8)
        out.append(tf.io.encode_jpeg(img, quality=90).numpy())
    return out


def random_resized_crop(image, size):
    """torchvision RandomResizedCrop(size): area 8-100 %, aspect 3/4-4/3."""
    begin, crop, _ = tf.image.sample_distorted_bounding_box(
        tf.shape(image), tf.zeros([0, 0, 4], tf.float32),
        min_object_covered=0.0, aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(0.08, 1.0), max_attempts=10, use_image_if_no_bounding_boxes=True)
    image = tf.slice(image, begin, crop)
    return tf.image.resize(image, (size, size))


def live_dataset(jpegs, labels, size, batch):
    def load(data, label):
        image = tf.io.decode_jpeg(data, channels=3)
        image = random_resized_crop(image, size)
        image = tf.image.random_flip_left_right(image)
        return (image - 127.5) / 127.5, label

    ds = tf.data.Dataset.from_tensor_slices((jpegs, labels)).repeat()
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def cached_dataset(n, labels, size, batch, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(-1, 1, size=(n, size, size, 3)).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).repeat()
    return ds.batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


class BatchTimes(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times = []

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter())


def build(backbone_name, size):
    embedder = kd.models.build_embedder(BACKBONES[backbone_name](size),
                                        embedding_dim=512)
    model = kd.models.MetricModel(embedder, proxies=kd.layers.Proxies(NUM_CLASSES))
    model.compile(optimizer=keras.optimizers.AdamW(1e-4, weight_decay=1e-4),
                  loss=kd.losses.ProxyAnchorLoss(), proxy_lr_multiplier=100.0,
                  clip_value=10.0)
    return model


def time_training(model, ds, warmup, steps):
    timer = BatchTimes()
    model.fit(ds, epochs=1, steps_per_epoch=warmup + steps, verbose=0,
              callbacks=[timer])
    t = timer.times
    return (t[-1] - t[warmup - 1]) / steps


def time_pipeline(ds, batches):
    it = iter(ds)
    next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return (time.perf_counter() - start) / batches


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes: 64 px, batch 8, 3 steps")
    parser.add_argument("--backbones", default="resnet50,small")
    parser.add_argument("--devices", default="1,2")
    parser.add_argument("--pipelines", default="cached,live")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32,
                        help="global batch (split over the devices)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--warmup-steps", type=int, default=2)
    args = parser.parse_args()
    if args.quick:
        args.image_size, args.batch, args.steps, args.warmup_steps = 64, 8, 3, 1
    size, batch = args.image_size, args.batch
    n = batch * 4
    labels = (np.arange(n) % NUM_CLASSES).astype("int32")
    jpegs = jpeg_images(n)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])

    datasets = {
        "cached": lambda: cached_dataset(n, labels, size, batch),
        "live": lambda: live_dataset(jpegs, labels, size, batch),
    }
    pipelines = args.pipelines.split(",")
    alone = {p: batch / time_pipeline(datasets[p](), max(2, args.steps))
             for p in pipelines}

    print(f"MetricModel training step, {size} px, global batch {batch}, "
          f"{os.cpu_count()} CPU cores, TF {tf.__version__}, "
          f"Keras {keras.__version__}")
    print()
    print("| backbone | devices | pipeline | ms / step | images / s | "
          "pipeline alone, images / s |")
    print("|---|---|---|---|---|---|")
    for name in args.backbones.split(","):
        for devices in (int(d) for d in args.devices.split(",")):
            if devices == 1:
                model = build(name, size)
            else:
                with strategy.scope():
                    model = build(name, size)
            for pipeline in pipelines:
                seconds = time_training(model, datasets[pipeline](),
                                        args.warmup_steps, args.steps)
                print(f"| {name} | {devices} | {pipeline} | {1000 * seconds:.0f} "
                      f"| {batch / seconds:.1f} | {alone[pipeline]:.0f} |",
                      flush=True)


if __name__ == "__main__":
    main()
