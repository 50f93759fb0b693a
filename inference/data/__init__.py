"""Datasets (:mod:`datasets`), their file formats and checksums (:mod:`files`) and verified
downloads (:mod:`download`). Generic: never imports a model family, the commands or the
CLI."""
