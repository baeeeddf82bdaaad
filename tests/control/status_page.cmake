# status_page_test: being written (issue 6).
