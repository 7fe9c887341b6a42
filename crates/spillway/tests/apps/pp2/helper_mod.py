GREETING = "hello from helper_mod"
