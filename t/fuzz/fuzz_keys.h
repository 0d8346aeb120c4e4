/*
 * Copyright (C) ngx_tenant_module authors
 *
 * Fixed private keys of the fuzz harnesses, generated once for fuzzing
 * only (they sign nothing else and are no secret): fuzz_jwt.c signs the
 * tokens it builds with them, and the seed tokens in corpus/jwt/ were
 * signed with them (gen_seeds.c), so the seeds verify and reach the
 * claims parser.
 *
 *   fuzz_rsa_key    RSA 2048, kid FUZZ_RSA_KID
 *   fuzz_ec_key     EC P-256, kid FUZZ_EC_KID
 *   fuzz_ec2_key    EC P-256, no kid (Clerk's networkless PEM key)
 */

#ifndef _FUZZ_KEYS_H_INCLUDED_
#define _FUZZ_KEYS_H_INCLUDED_


#define FUZZ_RSA_KID    "ins_fuzz_rsa"
#define FUZZ_EC_KID     "ins_fuzz_ec"


static const char  fuzz_rsa_key[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQCh8cx17YDPbCRr\n"
    "VAvcVupx//xt9qv6LnPRowtWPVqfsjJJ/oyAbZtt5M77ahH/XVlxq/fr7K3IfG4x\n"
    "M9Msl7a7MoU3u9qsS058KpsNLvnMJRge4+8PDmJDTHmrVji0vq2nInVlDsGqHawZ\n"
    "tY5VsURu0WKfa7O+lP4htBtH0JIgOUzp5yPlIxmmk0OPMJMBeui/woaJOj+ZU8wB\n"
    "Q8wvu7LLtgSrDyirIwUkrm/GmzxnYZ8NKG29l0nUzis3XXAsi1SrORUFmZ32d1BC\n"
    "6Kowotw3O7r8SS2Kpvm8ZIb7aE8aPRcZyaLV8HceKwPWjHh/N+SHzly2W4FUb6ud\n"
    "WRfqrLEHAgMBAAECggEAAcNvP6BKWEjwV6a3Ra5AveTZETLv7kWVJ1gi7fdw/8A9\n"
    "wvIsisJmyOlCJ91LYxNxHUL+bDhH637cb+n82smvu+8aVNvd+c/7tudqZfGnClto\n"
    "HVUyQy2KwJQeTmJIvIZQN0zLH9wWPhyLVk7dK2mkgn1XzIwj62u4HaOjIZxckvu0\n"
    "DBJVt0uU4a/stvy74TFVZNhwbcedF25aFefcYF+keAc4iP5657iAAXlPHGCimznx\n"
    "oGV2jfZu2jilBdzWcP211k7l5OnV7WQY4bAAs0MuH6iZqMhk/Chfq0pzH4i8JvFw\n"
    "aab667HLrukA8mosEwTmLjp6RH+9DWhPF1Fh3UQDjQKBgQDQJuSinQDxEZQFZp7/\n"
    "KMljM4QGkHxeESaOIzrCmz1qx/w3ZX2mdEOcNcnTHi7+cDItR6f3yOf6H8cO1Z4b\n"
    "KAz7LzZFuHVUvVo2J2V30KH4s3TdNz1+bGXpuBYvQ3v72QhiY4yOPNolfmTg9tm4\n"
    "0/GjHDIR3LPTEsJsXH7hrqizGwKBgQDHK72lTJgwL7CrNRg+aXJ/fiuOa+0HMbtQ\n"
    "1db0F4SLNvrN8q9UxnUiITSKvQJdCIF9iQk2oZJzyaG7BUH0kb3xHKkXVGnH53hu\n"
    "kcRGPLMiLrnTevYHSWNV2ZMnTtfJeaw506s1JMgl6sPCla+VeU0eisl4Nrf/D7hI\n"
    "0lyjv60shQKBgQCVdSe7v0Ia1kVTb3EAw3d+3FGTKRGztVraul8Jts/tqTTnTd9f\n"
    "sqGNO230Qfr6RPMyYf4wQ7iVd1XFyAqjcymG/kpY226b7u4kbjtEQbDbU3e5E137\n"
    "NbgjjkOXojwXBKopg1M8GmOEgnHKulRwivY46RjmjHMuPo0No4iTYYbOOwKBgQCf\n"
    "artY233U09csskq9adljgrGKRYhrAbtUcFSk+03zwAXvYhhEWrTWpI1RnweNP4ml\n"
    "2VGukJSQaQsyjnrELwNBQhd1vPMONo+GsNXRAjS/X3cNdpYGLw97X7MQ+2JsuR7J\n"
    "Cks3NkGdV9NopDbuBTFdCOlJd0K+vO5cG0RbLMiHoQKBgEdpc3vTtdAjiXkxTxHa\n"
    "efuEBdhYvEkywf4QNnhqr/k+DQhcNj6paNnpBL4xXu5u9i86YsdQ7L037zlIIrGc\n"
    "Z+9sedbqgVN+wrBR9sbEBWh7YMcH8lMZYGpPfE6MF1J1Euf3NEpRWn8/NLnLR4b1\n"
    "6rgEV08q9upl8Suah5ZeNtoT\n"
    "-----END PRIVATE KEY-----\n"
    ;

static const char  fuzz_ec_key[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgh+v4dF01x1K8TM8G\n"
    "StW0/dLYkUTozhwrYWC7Y+uEnnShRANCAAS1vAOrt8mAkKjRz8Fh7cpwVJpyrBzl\n"
    "gntTrEH+Hng2MNtqtF1SaXERNimUP9QsVmuhNwgBwm8lt2Wwv2XgkhH6\n"
    "-----END PRIVATE KEY-----\n"
    ;

static const char  fuzz_ec2_key[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg4G+15vIKPzQB7esm\n"
    "l1A56Ns1nXg3RFxuPjHBfWqmqQShRANCAAT6X8mkvDw9USwa7Vl7JrDKhAr8pty5\n"
    "tFlVXVvsSARfVT7zIKfywsw5nH6aTCGwtoD4e99Ifmgm+lnDBW7W2RmL\n"
    "-----END PRIVATE KEY-----\n"
    ;


#endif /* _FUZZ_KEYS_H_INCLUDED_ */
