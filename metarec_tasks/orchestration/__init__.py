"""Drivers: the command line, the Airflow task bodies, deployment helpers and the run summary."""
