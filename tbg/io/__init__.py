"""Input/output for the importer: fsspec sources, id conversion, entity dictionaries, bucket spill files."""
