"""Embedded BARN-style navigation simulator. ``import envs`` registers the Gymnasium ids."""
