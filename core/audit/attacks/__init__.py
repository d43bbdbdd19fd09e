"""Adversarial attacks, one module per family, all batched on the model's device.

Every attack takes a model returning raw logits, a clean batch and its labels, keeps inputs inside
the valid range, takes an ``on_step(step, total)`` hook and returns an :class:`AttackResult` whose
``success`` only counts samples the model classified correctly before the attack. Import each
attack from its family's module (``core.audit.attacks.gradient`` and so on).
"""
