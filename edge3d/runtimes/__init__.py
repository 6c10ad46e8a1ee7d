"""Runtimes that execute exported models. Heavy backends are imported lazily."""
