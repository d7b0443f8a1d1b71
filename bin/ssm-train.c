#include <stdio.h>
int main(void){fprintf(stderr,"ssm-train: not built yet\n");return 2;}
