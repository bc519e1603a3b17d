"""Decides what happens to each statement; plans and runs the ones that touch models."""
