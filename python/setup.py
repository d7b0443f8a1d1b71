"""pip install ./python: the ssm module (pure Python over ctypes; the C library comes from
meson: `meson install`, or SSM_LIBRARY=build/python/libssm-python.so). docs/python.md."""
from setuptools import setup

setup(
    name="ssm",
    version="0.1.0",
    description="Selective state space models (Mamba) on libssm: score, embed, generate, train",
    license="MIT",
    packages=["ssm"],
    python_requires=">=3.9",
    install_requires=["numpy"],
)
