// placeholder: being written (issue 9)
