"""Hardening methods: one interface, defensive distillation its first implementation."""
