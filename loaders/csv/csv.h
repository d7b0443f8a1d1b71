/* csv.h: a table of numbers from a CSV or TSV file, through libcsv (Debian's libcsv-dev).
 * The first row names the columns; a name the reader looks up (the date column, the value
 * columns) may stand there only once. Errors name the file, the line and the column (the field's
 * number, from 1): "series.csv:14:3: 'abc' in column 'temp' is not a number". */
#ifndef SSM_LOADERS_CSV_H
#define SSM_LOADERS_CSV_H

#include "ssm/ssm.h"

typedef enum csv_missing {
    CSV_MISSING_REFUSE,   /* an empty or NA cell is an error */
    CSV_MISSING_PREVIOUS, /* the last value above it (the first below it for leading gaps) */
    CSV_MISSING_LINEAR,   /* linear interpolation between the values around it */
} csv_missing;

typedef struct csv_options {
    char delimiter;              /* 0: tab for .tsv / .tab files, else comma */
    const char *const *columns;  /* the value columns, in this order (NULL-terminated); NULL:
                                  * every column but the date column */
    const char *date_column;     /* kept as text (NULL: none) */
    csv_missing missing;
} csv_options;

typedef struct csv_table {
    int rows, cols;              /* data rows (the header excluded), value columns */
    char **names;                /* (cols) */
    double *values;              /* (rows, cols) row-major, every value finite */
    char **dates;                /* (rows) the date column's text, or NULL */
    int *lines;                  /* (rows) each row's line in the file */
    char *path;
} csv_table;

ssm_status csv_read(const char *path, const csv_options *options, csv_table *out);
void csv_table_free(csv_table *table);
/* The column of that name, or -1. */
int csv_column(const csv_table *table, const char *name);

#endif
