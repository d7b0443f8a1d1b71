/* train_loop.c: being written */
