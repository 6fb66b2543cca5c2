"""Readers and writers for the file formats of the field; every reader reports bad input as an InputError."""
