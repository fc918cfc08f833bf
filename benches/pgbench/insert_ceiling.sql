BEGIN;
INSERT INTO ceiling_rows (body) VALUES ('x');
COMMIT;
