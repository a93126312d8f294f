"""Coverage-guided fuzz targets (atheris); tests/unit/test_fuzz_atheris.py runs them."""
