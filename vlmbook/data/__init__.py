"""Data that runs with no download: the museum, the bundled photos, and readers' own folders."""
from .folder import ImageFolder, load_image
from .museum import (
    COLOUR_NAMES,
    LOCATIONS,
    QUESTION_TYPES,
    RELATIONAL_TYPES,
    SHAPES,
    SINGLE_OBJECT_TYPES,
    SIZE_NAMES,
    QA,
    Museum,
    MuseumObject,
    Plaque,
    PreferencePair,
    Sample,
    Scene,
    caption,
    cite,
    generate_scene,
    patch_box,
    preference_pairs,
    questions,
    render,
    scene_seed,
    support_patches,
)
from .photos import EVAL_PHOTOS, TRAIN_PHOTOS, eval_images, load_photo, random_crops

__all__ = [
    "COLOUR_NAMES", "LOCATIONS", "QUESTION_TYPES", "RELATIONAL_TYPES", "SHAPES", "SINGLE_OBJECT_TYPES",
    "SIZE_NAMES", "QA", "Museum", "MuseumObject", "Plaque", "PreferencePair", "Sample", "Scene", "caption",
    "cite", "generate_scene", "patch_box", "preference_pairs", "questions", "render", "scene_seed",
    "support_patches", "ImageFolder", "load_image", "EVAL_PHOTOS", "TRAIN_PHOTOS", "eval_images", "load_photo",
    "random_crops",
]
