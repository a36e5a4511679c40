-- Drug dispensations per ATC anatomical main group (first letter) and year.
-- total_quantity is an exact numeric sum; mean_quantity is computed in double
-- precision, whose last digits depend on the order rows are added in (another
-- server, another physical order): the workload's relative_tolerance absorbs them.
SELECT
    left(atc_code, 1) AS atc_group,
    extract(year FROM dispensed_on)::int AS dispensed_year,
    count(*) AS dispensations,
    count(DISTINCT patient_id) AS patients,
    sum(quantity) AS total_quantity,
    avg(quantity::double precision) AS mean_quantity
FROM registry.dispensations
GROUP BY 1, 2
