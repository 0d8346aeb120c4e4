package JwksServer;

# A JWKS endpoint for the tenant_jwks_request tests (t/130, t/135): an
# echo_start() server driven by files in a directory, so that a test
# changes what it answers without restarting it.
#
#     my $j = JwksServer->new(modes => { enc => sub { ... } });
#     $j->set_jwks(\%jwk, ...);     # the document "ok" serves
#     $j->set_doc($text);           # ... or any text (even empty)
#     $j->set_mode('status500');    # see below
#     $j->set_delay(1.5);           # seconds before any answer (0: none)
#     ... $j->nfetch, $j->fetches, $j->last_fetch_t, $j->port
#     my $j2 = $j->another;         # one more server on the same files
#     $j->stop;
#
# Modes: ok (the document), status500, malformed (the first 60 % of the
# document), nokeys ({"keys":[]}), slow (2 s, then the document), delay
# (0.5 s, then the document); modes => { name => sub { ($status,
# [headers], $body) } } adds a test's own (the sub gets the request).
#
# Every request appends one JSON line to "hits": t (time), mode, method,
# uri, the Authorization / Cookie / Content-Length / X-Client-Marker
# headers it got (arrays, as echo_start has them) and body_len; fetches()
# returns them as hashes.

use strict;
use warnings;

use Fcntl       qw(O_WRONLY O_APPEND O_CREAT);
use File::Temp  ();
use JSON::XS    ();
use Time::HiRes qw(time sleep);

use TenantTest  qw(echo_start echo_stop);

my $JSON = JSON::XS->new->utf8->canonical;

# A JWKS document of these JWKs (hashes).
sub doc { my (undef, @keys) = @_; return $JSON->encode({ keys => [@keys] }) }

# dir (default: a new temp dir, removed at exit), workers (4), modes.
sub new {
    my ($class, %o) = @_;

    my $dir = $o{dir};
    if (!defined $dir) {
        $dir = File::Temp::tempdir('jwks-XXXXXX', TMPDIR => 1, CLEANUP => 1);
        chmod 0755, $dir;
    }

    my $self = bless { dir => $dir, modes => $o{modes} || {},
                       workers => $o{workers} || 4 }, $class;
    $self->set_mode('ok') unless -e "$dir/mode";
    $self->set_doc('{"keys":[]}') unless -e "$dir/jwks";

    $self->{echo} = echo_start(handler => sub { $self->_answer(@_) },
                               workers => $self->{workers});
    return $self;
}

# One more server answering from the same files (mode, document, hits).
sub another {
    my ($self) = @_;
    return ref($self)->new(dir => $self->{dir}, modes => $self->{modes},
                           workers => $self->{workers});
}

sub port { $_[0]{echo}{port} }
sub dir  { $_[0]{dir} }
sub stop { echo_stop($_[0]{echo}) }

sub set_mode  { my ($self, $m) = @_; _spew("$self->{dir}/mode", $m) }
sub set_doc   { my ($self, $d) = @_; _spew("$self->{dir}/jwks", $d) }
sub set_jwks  { my ($self, @k) = @_; $self->set_doc($self->doc(@k)) }
sub set_delay { my ($self, $s) = @_; _spew("$self->{dir}/delay", $s || 0) }

# The requests so far, as hashes (oldest first).
sub fetches {
    my ($self) = @_;
    return map { $JSON->decode($_) } grep { length }
           split /\n/, _slurp("$self->{dir}/hits");
}
sub nfetch       { my @f = $_[0]->fetches; return scalar @f }
sub last_fetch_t { my @f = $_[0]->fetches; return @f ? $f[-1]{t} : 0 }


sub _answer {
    my ($self, $req) = @_;

    my $dir  = $self->{dir};
    my $mode = _slurp("$dir/mode") || 'ok';
    my $h    = $req->{headers};
    my $hit  = $JSON->encode({
        t              => time,
        mode           => $mode,
        method         => $req->{method},
        uri            => $req->{uri},
        authorization  => $h->{authorization},
        cookie         => $h->{cookie},
        content_length => $h->{'content-length'},
        marker         => $h->{'x-client-marker'},
        body_len       => length($req->{body} // ''),
    });
    sysopen my $fh, "$dir/hits", O_WRONLY | O_APPEND | O_CREAT or die "hits: $!";
    syswrite $fh, "$hit\n";
    close $fh;

    my $delay = _slurp("$dir/delay") || 0;
    sleep $delay if $delay > 0;

    my @json = ('Content-Type' => 'application/json');
    my $doc  = _slurp("$dir/jwks");

    return $self->{modes}{$mode}->($req) if $self->{modes}{$mode};
    return (500, \@json, '{"error":"internal"}') if $mode eq 'status500';
    return (200, \@json, substr($doc, 0, int(length($doc) * 0.6))) if $mode eq 'malformed';
    return (200, \@json, '{"keys":[]}') if $mode eq 'nokeys';
    sleep 2   if $mode eq 'slow';       # past t/130's proxy_read_timeout 1s
    sleep 0.5 if $mode eq 'delay';      # within it
    return (200, \@json, $doc);
}

# Written whole (rename), so that a server never reads half a file.
sub _spew {
    my ($path, $text) = @_;
    open my $fh, '>', "$path.tmp" or die "$path.tmp: $!";
    print $fh $text;
    close $fh or die "$path: $!";
    rename "$path.tmp", $path or die "rename $path: $!";
}

sub _slurp {
    my ($path) = @_;
    open my $fh, '<', $path or return '';
    local $/;
    return scalar(<$fh>) // '';
}

1;
