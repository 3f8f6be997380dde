"""Smart DevSecOps/MLOps Assistant shared library."""
