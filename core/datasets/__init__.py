"""Datasets: references to tensors, array checks, image-folder archives."""
