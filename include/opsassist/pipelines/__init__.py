"""Pipeline steps shared by DAGs, the CLI and Spark jobs (DAG files only wire them)."""
