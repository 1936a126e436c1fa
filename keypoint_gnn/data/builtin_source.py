"""The generated constellation set (`keypoint_gnn.data.builtin`) as a pipeline source."""
from __future__ import annotations

from keypoint_gnn.data import builtin
from keypoint_gnn.data.sources import SourceData, SourceSplit


def builtin_split_sizes(num_examples: int, validation_fraction: float, test_fraction: float,
                        max_examples: int | None) -> dict[str, int]:
    """{"train", "validation", "test": count}: the fractions of `num_examples`, each capped."""
    sizes = {"validation": round(num_examples * validation_fraction),
             "test": round(num_examples * test_fraction)}
    sizes = {"train": num_examples - sizes["validation"] - sizes["test"], **sizes}
    for name, count in sizes.items():
        if count < 1:
            raise ValueError(
                f"the built-in set's {name} split would be empty: num_examples={num_examples} "
                f"with validation_fraction={validation_fraction}, test_fraction={test_fraction}")
    if max_examples is not None:
        sizes = {name: min(count, max_examples) for name, count in sizes.items()}
    return sizes


def load_builtin_source(spec: str = "builtin", *, image_size: int, seed: int,
                        validation_fraction: float, test_fraction: float,
                        max_examples: int | None,
                        options: builtin.BuiltinOptions | None = None) -> SourceData:
    """Generates the built-in set at `image_size`, so the pipeline never resizes it.

    `spec` is what it was opened from ("builtin" or "builtin:KEY=VALUE,..."), kept as the
    source's name.

    Flips are not label-preserving here: a mirrored constellation can be another class.
    """
    options = options or builtin.BuiltinOptions()
    if not isinstance(options, builtin.BuiltinOptions):
        raise TypeError(f"builtin_options={options!r} must be a BuiltinOptions or None")
    sizes = builtin_split_sizes(options.num_examples, validation_fraction, test_fraction,
                                max_examples)
    generated = builtin.generate_splits(image_size, seed, sizes, options)
    return SourceData(
        name=spec,
        class_names=[f"constellation_{index}" for index in range(options.num_classes)],
        channels=3,
        splits={name: SourceSplit.from_arrays(split.images, split.labels)
                for name, split in generated.items()},
        split_origin={name: f"generated, seed {seed}" for name in sizes},
        flip_invariant=False,
        test_parts=generated["test"].part_positions,
        image_shape=(image_size, image_size),
    )
