"""The types the stages hand each other, and InputError: no I/O, no servers."""
