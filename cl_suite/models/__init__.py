"""Backbones and the TaskModels built on them. Scenarios choose one; strategies never see which."""
