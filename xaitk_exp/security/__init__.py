"""Security: which classes a config may build (``targets``), credentials kept out of what is written
(``redact``), which model types loading may trust (``trust``)."""
