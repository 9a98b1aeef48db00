-- Runs once when the PostgreSQL volume is first initialized (docker-entrypoint-initdb.d), as
-- POSTGRES_USER, after POSTGRES_DB (Airflow's metadata database) was created. The warehouse gets its
-- own database so Airflow migrations and analysts' queries never touch each other's schema.
-- METAREC_WAREHOUSE_URL in docker-compose.yaml points at this name.
CREATE DATABASE metarec_warehouse;
