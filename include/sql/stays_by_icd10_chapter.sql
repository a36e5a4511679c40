-- Hospital stays per ICD-10 chapter (WHO roman numerals) and admission year:
-- the activity report a registry's users run most. Integer counts and an
-- exact numeric mean: the target must match the source exactly.
SELECT
    CASE
        WHEN left(icd10_code, 1) IN ('A', 'B') THEN 'I'
        WHEN left(icd10_code, 1) = 'C' OR left(icd10_code, 3) BETWEEN 'D00' AND 'D48' THEN 'II'
        WHEN left(icd10_code, 1) = 'D' THEN 'III'
        WHEN left(icd10_code, 1) = 'E' THEN 'IV'
        WHEN left(icd10_code, 1) = 'F' THEN 'V'
        WHEN left(icd10_code, 1) = 'G' THEN 'VI'
        WHEN left(icd10_code, 3) BETWEEN 'H00' AND 'H59' THEN 'VII'
        WHEN left(icd10_code, 1) = 'H' THEN 'VIII'
        WHEN left(icd10_code, 1) = 'I' THEN 'IX'
        WHEN left(icd10_code, 1) = 'J' THEN 'X'
        WHEN left(icd10_code, 1) = 'K' THEN 'XI'
        WHEN left(icd10_code, 1) = 'L' THEN 'XII'
        WHEN left(icd10_code, 1) = 'M' THEN 'XIII'
        WHEN left(icd10_code, 1) = 'N' THEN 'XIV'
        WHEN left(icd10_code, 1) = 'O' THEN 'XV'
        WHEN left(icd10_code, 1) = 'P' THEN 'XVI'
        WHEN left(icd10_code, 1) = 'Q' THEN 'XVII'
        WHEN left(icd10_code, 1) = 'R' THEN 'XVIII'
        WHEN left(icd10_code, 1) IN ('S', 'T') THEN 'XIX'
        WHEN left(icd10_code, 1) IN ('V', 'W', 'X', 'Y') THEN 'XX'
        WHEN left(icd10_code, 1) = 'Z' THEN 'XXI'
        WHEN left(icd10_code, 1) = 'U' THEN 'XXII'
        ELSE 'unknown'
    END AS icd10_chapter,
    extract(year FROM admission_date)::int AS admission_year,
    count(*) AS stays,
    count(DISTINCT patient_id) AS patients,
    round(avg(discharge_date - admission_date), 2) AS mean_length_of_stay_days
FROM registry.stays
GROUP BY 1, 2
