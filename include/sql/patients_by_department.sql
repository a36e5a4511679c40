-- Registered patients per department of residence and sex (1 male, 2 female,
-- 9 unknown), with their mean birth year.
SELECT
    department,
    sex,
    count(*) AS patients,
    round(avg(birth_year), 1) AS mean_birth_year
FROM registry.patients
GROUP BY department, sex
