"""keypoint-gnn: keypoint-based, CNN-assisted image representation learning with graph neural networks."""
from setuptools import find_packages, setup

setup(
    name="keypoint-gnn",
    version="0.1.0",
    description=(
        "Keypoint detectors, CNN<->graph interconnects and Spektral GNNs for images "
        "(Lohan, Wrat, Sethi 2021), with trainers, tuning and deployment."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["keypoint_gnn", "keypoint_gnn.*", "trainers", "trainers.*"]),
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "tf_keras>=2.21,<2.22",
        "spektral==1.3.1",
        "keras-tuner>=1.4.7,<1.5",
        "tensorflow-datasets>=4.9",
        "tensorboard>=2.21,<2.22",
        "opencv-python-headless>=4.8",
        "matplotlib>=3.7",
        "numpy>=1.26",
        "scipy>=1.10",
        "pillow>=10",
    ],
    extras_require={
        "cuda": ["tensorflow[and-cuda]>=2.21,<2.22"],
        "lite": ["ai-edge-litert>=1.0"],
        "serving": ["tensorflow-serving-api>=2.19", "requests>=2.31"],
        "dev": ["pytest>=8", "pytest-timeout>=2.3", "pytest-xdist>=3.5", "ruff>=0.5"],
    },
)
