"""PetSeg benchmarks: ``python bench/run.py`` measures our way against the seed's way (see bench/README.md)."""
