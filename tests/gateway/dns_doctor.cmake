# dns_doctor_test: being written (issue 6).
